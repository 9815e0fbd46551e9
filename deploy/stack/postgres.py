"""PostgreSQL for the stack: the Dagster instance, the ledger and MLflow, each with its own role.

Postgres refuses to run as root; when the stack is started by root (CI) the
server runs as the `postgres` account Debian's package creates, and is given
traverse rights on the folders above its data directory
(`processes.let_traverse`).

The server speaks TLS only: its certificate comes from the stack's CA, and its
`pg_hba.conf` admits `hostssl` connections from 127.0.0.1 with SCRAM passwords
and nothing else, so a client that does not ask for TLS is refused by the
server itself. Every client connects with `sslmode=verify-full` against the CA.

The ledger's table belongs to `ledger_owner`; the pipeline connects as
`ledger_writer`, which may SELECT and INSERT and nothing else, so history
cannot be rewritten through the pipeline's credentials whatever its code does.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql

from deploy.stack.processes import Service, StackError, hand_over, let_traverse, server_account
from deploy.stack.settings import HOST, Stack
from resources.atomic import atomic_write_bytes
from resources.integrity import create_ledger_tables

ADMIN = "superuser"
DATABASES = {"dagster": "dagster", "mlflow": "mlflow", "ledger": "ledger_owner"}
INSTALL_HINT = (
    "PostgreSQL's server binaries were not found: install them (`apt-get install postgresql`) "
    "or put the folder holding `initdb` and `postgres` on PATH."
)


def binaries() -> Path:
    """The folder holding `initdb` and `postgres`: PATH first, then Debian's versioned folders."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not versions:
        raise StackError(INSTALL_HINT)
    return Path(versions[-1]).parent


def _version(bin_dir: Path) -> str:
    out = subprocess.run([bin_dir / "postgres", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.split()[-1].split(".")[0]


def _account() -> str | None:
    return server_account("postgres")


def _admin(stack: Stack, database: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(
        host=HOST,
        port=stack.port("postgres"),
        user=ADMIN,
        password=stack.credentials()[ADMIN],
        dbname=database,
        autocommit=True,
        connect_timeout=3,
        **client_tls(stack.ca_certificate),
    )


def client_tls(ca_certificate: Path) -> dict[str, str]:
    """libpq's settings for TLS to a server whose certificate `ca_certificate` signed, and no other."""
    return {"sslmode": "verify-full", "sslrootcert": str(ca_certificate)}


def _accepts_connections(stack: Stack) -> bool:
    with _admin(stack):
        return True


def _data(stack: Stack) -> Path:
    return stack.folder("postgres") / "data"


def _tls_folder(stack: Stack) -> Path:
    return stack.folder("postgres") / "tls"


# Only TLS from loopback, with a SCRAM password: a plain `host` connection matches no line and is refused.
HBA = "hostssl all all 127.0.0.1/32 scram-sha-256\n"


def _write_tls(stack: Stack) -> None:
    """The server's certificate and key from the stack's CA, and its `pg_hba.conf`, in files the
    server's account owns (Postgres refuses a key that anyone else can read)."""
    issued = stack.authority.server((HOST, "localhost"), name="postgres")
    folder = _tls_folder(stack)
    folder.mkdir(mode=0o700, exist_ok=True)
    files = {"server.pem": issued.certificate.read_bytes(), "server.key": issued.key.read_bytes()}
    for name, content in {**files, "pg_hba.conf": HBA.encode()}.items():
        atomic_write_bytes(folder / name, content, mode=0o600)
    issued.key.unlink()  # the server's copy is the only one
    account = _account()
    if account:
        let_traverse(stack.home.root, folder, account)
    hand_over(account, folder, *(folder / name for name in (*files, "pg_hba.conf")))


def initialise(stack: Stack) -> None:
    """Create the data directory on first use; refuse one made by another major version."""
    bin_dir = binaries()
    data = _data(stack)
    version_file = data / "PG_VERSION"
    if version_file.exists():
        found, ours = version_file.read_text().strip(), _version(bin_dir)
        if found != ours:
            raise StackError(
                f"{data} was created by PostgreSQL {found}, but the binaries in {bin_dir} are {ours}. "
                f"Upgrade it with pg_upgrade, or remove it (`make stack-down`, then delete "
                f"{data.parent}) to start empty."
            )
        return
    account = _account()
    data.mkdir(mode=0o700, exist_ok=True)
    password_file = data.parent / "initdb.pw"
    password_file.write_text(stack.credentials()[ADMIN])
    password_file.chmod(0o600)
    if account:
        let_traverse(stack.home.root, data, account)
    hand_over(account, data, password_file)
    try:
        subprocess.run(
            [bin_dir / "initdb", "-D", data, "--username", ADMIN, "--pwfile", password_file,
             "--auth", "scram-sha-256", "--encoding", "UTF8", "--locale", "C"],
            capture_output=True, check=True,
            user=account, group=account, extra_groups=[] if account else None,
        )  # fmt: skip
    except subprocess.CalledProcessError as error:
        raise StackError(f"initdb failed for {data}: {error.stderr.decode(errors='replace')}") from error
    finally:
        password_file.unlink(missing_ok=True)


def _prepare(stack: Stack) -> None:
    initialise(stack)
    _write_tls(stack)


def service(stack: Stack) -> Service:
    port = stack.port("postgres")
    tls = _tls_folder(stack)
    return Service(
        name="postgres",
        argv=[
            str(binaries() / "postgres"),
            "-D",
            str(_data(stack)),
            "-c",
            f"listen_addresses={HOST}",
            "-c",
            f"port={port}",
            "-c",
            "unix_socket_directories=",
            "-c",
            "password_encryption=scram-sha-256",
            "-c",
            "ssl=on",
            "-c",
            "ssl_min_protocol_version=TLSv1.3",
            "-c",
            f"ssl_cert_file={tls / 'server.pem'}",
            "-c",
            f"ssl_key_file={tls / 'server.key'}",
            "-c",
            f"hba_file={tls / 'pg_hba.conf'}",
        ],  # fmt: skip
        env=lambda: {"PATH": os.environ.get("PATH", ""), "LANG": "C"},
        healthy=lambda: _accepts_connections(stack),
        port=port,
        user=_account(),
        stop_signal=signal.SIGINT,  # "fast" shutdown: SIGTERM would wait for every client to leave
        hint="PostgreSQL says why in its log.",
        prepare=lambda: _prepare(stack),
        after_start=lambda: provision(stack),
    )


LOGIN_ROLES = ("dagster", "mlflow", "ledger_owner", "ledger_writer")


def provision(stack: Stack) -> None:
    """The stack's roles, databases and grants, with the stack's credentials."""
    credentials = stack.credentials()
    provision_databases(
        HOST,
        stack.port("postgres"),
        credentials[ADMIN],
        {role: credentials[role] for role in LOGIN_ROLES},
        client_tls(stack.ca_certificate),
    )


def provision_databases(
    host: str, port: int | str, admin_password: str, passwords: dict[str, str], tls: dict[str, str]
) -> None:
    """Roles, databases and grants on any server (the stack's, compose's) reached with libpq's `tls`
    settings; safe to run again (passwords are reset to `passwords`). The ledger's tables are created
    by their owner, and its writer may only SELECT and INSERT."""
    server = {"host": host, "port": port, "autocommit": True, "connect_timeout": 10, **tls}
    with psycopg.connect(user=ADMIN, password=admin_password, dbname="postgres", **server) as conn:
        for role in LOGIN_ROLES:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            verb = sql.SQL("ALTER ROLE" if exists else "CREATE ROLE")
            conn.execute(
                sql.SQL("{} {} LOGIN PASSWORD {}").format(
                    verb, sql.Identifier(role), sql.Literal(passwords[role])
                )
            )
        for database, owner in DATABASES.items():
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(database), sql.Identifier(owner)
                    )
                )
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database)))
        conn.execute("GRANT CONNECT ON DATABASE ledger TO ledger_writer")
    owner = passwords["ledger_owner"]
    create_ledger_tables(
        f"postgresql+psycopg://ledger_owner:{quote(owner)}@{host}:{port}/ledger?{urlencode(tls)}"
    )
    with psycopg.connect(user="ledger_owner", password=owner, dbname="ledger", **server) as conn:
        conn.execute("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC")
        conn.execute("GRANT USAGE ON SCHEMA public TO ledger_writer")
        conn.execute("GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO ledger_writer")
