"""Start a service in the background, wait until it is healthy, stop exactly what was started.

Each service's process id and start time go to `stack/run/<name>.json` when it
starts. `stop` signals the process group only if the process with that id
still has that start time, so a pid reused by an unrelated process after a
reboot or a crash is never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from resources.atomic import atomic_file


class StackError(RuntimeError):
    """A service could not start, or is not healthy: the message says which and what to do."""


@dataclass(frozen=True)
class Service:
    """A long-running process of the stack and how to tell that it is ready."""

    name: str
    argv: Sequence[str]
    env: Callable[[], Mapping[str, str]]  # read at start: it can name what an earlier service made
    healthy: Callable[[], bool]
    port: int
    cwd: Path | None = None
    user: str | None = None  # run as this account (a server that refuses root)
    stop_signal: int = signal.SIGTERM
    timeout_s: float = 120.0
    hint: str = ""
    prepare: Callable[[], None] | None = field(default=None, compare=False)  # files it needs first
    after_start: Callable[[], None] | None = field(default=None, compare=False)


def _start_time(pid: int) -> str | None:
    try:
        # Field 22 of /proc/<pid>/stat, after the parenthesised command name.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def server_account(name: str) -> str | None:
    """The account a server that refuses root runs as: `name` when we are root, else ours (None)."""
    return name if os.geteuid() == 0 else None


def let_traverse(home: Path, folder: Path, account: str) -> None:
    """Give `account` traverse (not read) rights on the owner-only folders from `home` down to
    `folder`'s parent; folders above `home` must already be traversable.

    A folder gets `account`'s group. One that already has another server's group (Postgres and nginx
    share the stack's folder) is made traversable by all: what lies below it is owner-only.
    """
    gid = pwd.getpwnam(account).pw_gid
    home = home.resolve()
    for parent in reversed(folder.resolve().parents):
        found = parent.stat()
        if found.st_mode & 0o001 or (found.st_gid == gid and found.st_mode & 0o010):
            continue
        if parent != home and home not in parent.parents:
            raise StackError(
                f"A server runs as the `{account}` account (it refuses root), which cannot enter "
                f"{parent}. Set PIPELINE_HOME to a folder below a path it can traverse."
            )
        if found.st_mode & 0o010:
            parent.chmod((found.st_mode & 0o7777) | 0o001)
        else:
            os.chown(parent, -1, gid)
            parent.chmod((found.st_mode & 0o7777) | 0o010)


def hand_over(account: str | None, *paths: Path) -> None:
    """Make `paths` the property of `account` (a server's own files), when it runs as another account."""
    if account:
        group = pwd.getpwnam(account).pw_gid
        for path in paths:
            shutil.chown(path, account, group)


def port_taken(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


class Supervisor:
    """The stack's process table: `stack/run/` for ids, `stack/logs/` for output."""

    def __init__(self, run_dir: Path, log_dir: Path) -> None:
        self.run_dir = run_dir
        self.log_dir = log_dir

    def _record(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def pid(self, name: str) -> int | None:
        """The service's pid if the process this stack started is still running."""
        record = self._record(name)
        if not record.exists():
            return None
        started = json.loads(record.read_text())
        # Dead (reaped if it was this process's child), or its pid reused by another process.
        if not _alive(started["pid"]) or _start_time(started["pid"]) != started["start_time"]:
            return None
        return started["pid"]

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(self, service: Service) -> None:
        """Start `service` unless it already runs, then wait for it to be healthy."""
        if self.pid(service.name) is not None:
            self.wait(service)
            return
        if service.prepare:
            service.prepare()
        if port_taken(service.port):
            raise StackError(
                f"{service.name}: port {service.port} on 127.0.0.1 is taken by another process. "
                f"Stop it, or move the whole stack with PIPELINE_STACK_PORT=<another base port>."
            )
        with self.log(service.name).open("ab") as log, _stoppable_children():
            try:
                process = subprocess.Popen(
                    list(service.argv),
                    env=dict(service.env()),
                    cwd=service.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    user=service.user,
                    group=service.user,
                    extra_groups=[] if service.user else None,
                )
            except FileNotFoundError as error:
                raise StackError(f"{service.name}: {error.filename} not found. {service.hint}") from error
        with atomic_file(self._record(service.name)) as handle:
            handle.write(json.dumps({"pid": process.pid, "start_time": _start_time(process.pid)}).encode())
        self.wait(service)
        if service.after_start:
            service.after_start()

    def wait(self, service: Service) -> None:
        deadline = time.monotonic() + service.timeout_s
        while time.monotonic() < deadline:
            if self.pid(service.name) is None:
                raise StackError(
                    f"{service.name} exited while starting. {service.hint} "
                    f"Its log: {self.log(service.name)}\n{self.tail(service.name)}"
                )
            try:
                if service.healthy():
                    return
            except Exception:  # noqa: BLE001, S110 - not ready yet; the deadline decides
                pass
            time.sleep(0.5)
        raise StackError(
            f"{service.name} did not become healthy within {service.timeout_s:.0f} s. {service.hint} "
            f"Its log: {self.log(service.name)}\n{self.tail(service.name)}"
        )

    def tail(self, name: str, lines: int = 15) -> str:
        log = self.log(name)
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""

    def stop(self, service: Service, timeout_s: float = 30.0) -> bool:
        """Stop the process group this stack started for `service`; False when it was not running."""
        pid = self.pid(service.name)
        self._record(service.name).unlink(missing_ok=True)
        if pid is None:
            return False
        os.killpg(pid, service.stop_signal)
        deadline = time.monotonic() + timeout_s
        while _alive(pid):
            if time.monotonic() > deadline:
                os.killpg(pid, signal.SIGKILL)
            time.sleep(0.2)
        return True


@contextlib.contextmanager
def _stoppable_children() -> Iterator[None]:
    """Start children with the default SIGTERM and SIGINT even if this process ignores them.

    An ignored signal stays ignored across exec: a stack started from a background shell (which
    ignores SIGINT) or from a process that ignores SIGTERM would start services `stop` cannot stop
    but by SIGKILL, after its timeout.
    """
    if threading.current_thread() is not threading.main_thread():  # only it may change dispositions
        yield
        return
    ignored = [s for s in (signal.SIGTERM, signal.SIGINT) if signal.getsignal(s) == signal.SIG_IGN]
    for number in ignored:
        signal.signal(number, signal.SIG_DFL)
    try:
        yield
    finally:
        for number in ignored:
            signal.signal(number, signal.SIG_IGN)


def _alive(pid: int) -> bool:
    """Whether `pid` still runs; reaps it when it is an exited child of this process."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
