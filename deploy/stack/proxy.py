"""The Dagster UI's front door: nginx with TLS from the stack's CA and a password per person.

The webservers listen on loopback ports of their own and answer anyone who
reaches them (Dagster OSS has no sign-in and no roles). nginx stands in front:

- `/` is the full UI (launch, re-execute, wipe), for `operator` only;
- `/viewer/` is a second webserver started with `--read-only`, for `viewer`
  and `operator`: it refuses every mutation, whoever asks.

Passwords are generated with the stack's credentials (`ui_operator`,
`ui_viewer`); nginx is given only their SHA-512 crypt hashes, in owner-only
files. When the stack runs as root, nginx runs as `www-data` (Debian's
account for it) and owns its own folder, so a worker never holds root.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import httpx

from deploy.stack.processes import Service, hand_over, let_traverse, server_account
from deploy.stack.settings import HOST, Stack
from resources.atomic import atomic_write_bytes

VIEWER_PREFIX = "/viewer"
USERS = {"operator": "ui_operator", "viewer": "ui_viewer"}  # who signs in -> their credentials entry
HINT = "nginx comes from Debian's nginx-light package (`apt-get install nginx-light`); its log says why."


def binary() -> str:
    """nginx from PATH, or Debian's /usr/sbin, which an unprivileged PATH may leave out."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin") or "nginx"


def _account() -> str | None:
    return server_account("www-data")


def _folder(stack: Stack) -> Path:
    return stack.folder("proxy")


def _hash(password: str) -> str:
    """A SHA-512 crypt hash, which nginx checks through the C library's crypt()."""
    made = subprocess.run(
        ["openssl", "passwd", "-6", "-stdin"], input=password, capture_output=True, text=True, check=True
    )
    return made.stdout.strip()


def config(listen: str, upstreams: dict[str, str], files: Path, scratch: Path, access_log: str) -> str:
    """nginx's configuration: TLS on `listen`, each path of `upstreams` (`/`, `/viewer/`) passed, with
    its websockets, to its `host:port` once its users' password is checked. `files` holds the
    certificate, its key and the password files; nginx keeps its pid and buffers in `scratch`."""
    allowed = {"/": "operators", f"{VIEWER_PREFIX}/": "viewers"}
    locations = "".join(
        f"""
    location {path} {{
      auth_basic "Dagster";
      auth_basic_user_file {files / allowed[path]};
      proxy_pass http://{upstream};
      proxy_http_version 1.1;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 1h;
    }}
"""
        for path, upstream in upstreams.items()
    )
    temp = "".join(f"  {kind}_temp_path {scratch / kind};\n" for kind in TEMP_KINDS)
    return f"""# Written by deploy/stack/proxy.py.
worker_processes 1;
pid {scratch / "nginx.pid"};
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
  access_log {access_log};
{temp}  server_tokens off;
  client_max_body_size 16m;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  server {{
    listen {listen} ssl;
    ssl_certificate {files / "server.pem"};
    ssl_certificate_key {files / "server.key"};
    ssl_protocols TLSv1.2 TLSv1.3;
{locations}  }}
}}
"""


TEMP_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def password_files(credentials: dict[str, str]) -> dict[str, bytes]:
    """Who may sign in where: `operators` (the full UI) and `viewers` (the read-only one, operators too)."""
    entries = {user: f"{user}:{_hash(credentials[secret])}\n" for user, secret in USERS.items()}
    return {
        "operators": entries["operator"].encode(),
        "viewers": (entries["viewer"] + entries["operator"]).encode(),
    }


def prepare(stack: Stack) -> None:
    """Certificate, password hashes, configuration and scratch folders, owned by nginx's account."""
    folder = _folder(stack)
    issued = stack.authority.server((HOST, "localhost"), name="proxy")
    upstreams = {
        "/": f"{HOST}:{stack.port('webserver')}",
        f"{VIEWER_PREFIX}/": f"{HOST}:{stack.port('webserver_read_only')}",
    }
    listen = f"{HOST}:{stack.port('proxy')}"
    # Who asked for what: beside nginx's own files, which the stack forgets on `down`.
    access_log = folder / "access.log"
    files = {
        "server.pem": issued.certificate.read_bytes(),
        "server.key": issued.key.read_bytes(),
        **password_files(stack.credentials()),
        "nginx.conf": config(listen, upstreams, folder, folder / "tmp", str(access_log)).encode(),
    }
    for name, content in files.items():
        atomic_write_bytes(folder / name, content, mode=0o600)
    issued.key.unlink()  # nginx's copy is the only one
    scratch = [folder / "tmp", *(folder / "tmp" / kind for kind in TEMP_KINDS)]
    for path in scratch:
        path.mkdir(mode=0o700, exist_ok=True)
    account = _account()
    if account:
        let_traverse(stack.home.root, folder, account)
    hand_over(account, folder, *(folder / name for name in files), *scratch)


def client(stack: Stack, user: str = "operator") -> httpx.Client:
    """An HTTPS client of the proxy, signed in as `user`, trusting the stack's CA alone."""
    return httpx.Client(
        base_url=f"https://{HOST}:{stack.port('proxy')}",
        auth=(user, stack.credentials()[USERS[user]]),
        verify=ssl.create_default_context(cafile=stack.ca_certificate),
        timeout=10,
    )


def _healthy(stack: Stack) -> bool:
    paths = ("/server_info", f"{VIEWER_PREFIX}/server_info")
    with client(stack) as signed_in:
        return all(signed_in.get(path).status_code == 200 for path in paths)


def service(stack: Stack) -> Service:
    folder = _folder(stack)
    return Service(
        name="proxy",
        argv=[
            binary(),
            "-p",
            str(folder),
            "-c",
            str(folder / "nginx.conf"),
            "-e",
            "stderr",
            "-g",
            "daemon off;",
        ],  # fmt: skip
        env=dict,
        healthy=lambda: _healthy(stack),
        port=stack.port("proxy"),
        user=_account(),
        hint=HINT,
        prepare=lambda: prepare(stack),
        timeout_s=30,
    )
