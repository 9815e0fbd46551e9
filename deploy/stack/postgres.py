"""PostgreSQL for the stack: the Dagster instance, the ledger and MLflow, each with its own role.

Postgres refuses to run as root; when the stack is started by root (CI) the
server runs as the `postgres` account Debian's package creates, and only that
account is given traverse rights on the folders above its data directory.

The ledger's table belongs to `ledger_owner`; the pipeline connects as
`ledger_writer`, which may SELECT and INSERT and nothing else, so history
cannot be rewritten through the pipeline's credentials whatever its code does.
"""

from __future__ import annotations

import glob
import grp
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from deploy.stack.processes import Service, StackError
from deploy.stack.settings import HOST, Stack
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
    """The account the server runs as: ours, unless we are root."""
    return "postgres" if os.geteuid() == 0 else None


def _let_traverse(stack: Stack, folder: Path, account: str) -> None:
    """Give `account`'s group traverse (not read) rights on the owner-only folders from the runtime
    home down to `folder`; folders above the home must already be traversable."""
    gid = pwd.getpwnam(account).pw_gid
    home = stack.home.root.resolve()
    for parent in reversed(folder.resolve().parents):
        mode = parent.stat().st_mode
        if mode & 0o001 or (parent.stat().st_gid == gid and mode & 0o010):
            continue
        if parent != home and home not in parent.parents:
            raise StackError(
                f"PostgreSQL runs as the `{account}` account (it refuses root), which cannot enter "
                f"{parent}. Set PIPELINE_HOME to a folder below a path it can traverse."
            )
        os.chown(parent, -1, gid)
        parent.chmod((mode & 0o7777) | 0o010)


def _admin(stack: Stack, database: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(
        host=HOST,
        port=stack.port("postgres"),
        user=ADMIN,
        password=stack.credentials()[ADMIN],
        dbname=database,
        autocommit=True,
        connect_timeout=3,
    )


def _accepts_connections(stack: Stack) -> bool:
    with _admin(stack):
        return True


def _data(stack: Stack) -> Path:
    return stack.folder("postgres") / "data"


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
        _let_traverse(stack, data, account)
        for path in (data, password_file):
            shutil.chown(path, account, grp.getgrgid(pwd.getpwnam(account).pw_gid).gr_name)
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


def service(stack: Stack) -> Service:
    port = stack.port("postgres")
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
        ],  # fmt: skip
        env=lambda: {"PATH": os.environ.get("PATH", ""), "LANG": "C"},
        healthy=lambda: _accepts_connections(stack),
        port=port,
        user=_account(),
        stop_signal=signal.SIGINT,  # "fast" shutdown: SIGTERM would wait for every client to leave
        hint="PostgreSQL says why in its log.",
        prepare=lambda: initialise(stack),
        after_start=lambda: provision(stack),
    )


LOGIN_ROLES = ("dagster", "mlflow", "ledger_owner", "ledger_writer")


def provision(stack: Stack) -> None:
    """The stack's roles, databases and grants, with the stack's credentials."""
    credentials = stack.credentials()
    provision_databases(
        HOST, stack.port("postgres"), credentials[ADMIN], {role: credentials[role] for role in LOGIN_ROLES}
    )


def provision_databases(host: str, port: int | str, admin_password: str, passwords: dict[str, str]) -> None:
    """Roles, databases and grants on any server (the stack's, compose's); safe to run again
    (passwords are reset to `passwords`). The ledger's tables are created by their owner, and its
    writer may only SELECT and INSERT."""
    server = {"host": host, "port": port, "autocommit": True, "connect_timeout": 10}
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
    create_ledger_tables(f"postgresql+psycopg://ledger_owner:{quote(owner)}@{host}:{port}/ledger")
    with psycopg.connect(user="ledger_owner", password=owner, dbname="ledger", **server) as conn:
        conn.execute("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC")
        conn.execute("GRANT USAGE ON SCHEMA public TO ledger_writer")
        conn.execute("GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO ledger_writer")
