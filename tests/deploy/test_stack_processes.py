"""The stack's process handling: clear refusals before anything starts, and stop only what it started."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.stack import postgres
from deploy.stack.processes import Service, StackError, Supervisor, hand_over, let_traverse
from deploy.stack.settings import Stack
from resources.runtime import RuntimeHome


def _service(port: int, argv: list[str] | None = None) -> Service:
    return Service(
        name="sleeper",
        argv=argv or [sys.executable, "-c", "import time; time.sleep(60)"],
        env=dict,
        healthy=lambda: True,
        port=port,
        timeout_s=10,
    )


def test_a_taken_port_is_refused_with_the_setting_that_moves_the_stack(tmp_path: Path):
    processes = Supervisor(tmp_path / "run", tmp_path / "logs")
    (tmp_path / "run").mkdir()
    (tmp_path / "logs").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StackError, match="PIPELINE_STACK_PORT") as refused:
            processes.start(_service(port))
    assert str(port) in str(refused.value)
    assert processes.pid("sleeper") is None  # nothing was started


def test_a_missing_binary_says_what_to_install(tmp_path: Path):
    processes = Supervisor(tmp_path, tmp_path)
    with pytest.raises(StackError, match="not found"):
        processes.start(_service(0, ["/nonexistent/postgres"]))


def test_stop_signals_only_the_process_it_started(tmp_path: Path):
    processes = Supervisor(tmp_path, tmp_path)
    service = _service(0)
    processes.start(service)
    pid = processes.pid("sleeper")
    assert pid is not None
    # A record naming someone else's process (a pid reused after a crash: same number, another
    # start time) is not acted on.
    time.sleep(0.1)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = tmp_path / "sleeper.json"
        saved = record.read_text()
        record.write_text(saved.replace(str(pid), str(stranger.pid)))
        assert processes.pid("sleeper") is None
        assert processes.stop(service) is False
        assert stranger.poll() is None
        record.write_text(saved)
        assert processes.stop(service) is True
        assert processes.pid("sleeper") is None
    finally:
        stranger.send_signal(signal.SIGKILL)
        stranger.wait()


def test_a_data_folder_from_another_postgres_version_is_refused(tmp_path: Path):
    stack = Stack(RuntimeHome(tmp_path / "home"))
    data = stack.folder("postgres") / "data"
    data.mkdir()
    (data / "PG_VERSION").write_text("9\n")
    with pytest.raises(StackError, match="pg_upgrade") as refused:
        postgres.initialise(stack)
    assert "PostgreSQL 9" in str(refused.value)


def test_a_stack_started_by_a_process_that_ignores_sigterm_still_stops_at_once(tmp_path: Path):
    """Ignored signals survive exec: without resetting them, every service would wait out the stop
    timeout and be killed (a CI runner or a nohup'd shell starts the stack this way)."""
    processes = Supervisor(tmp_path, tmp_path)
    service = _service(0)
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        processes.start(service)
    finally:
        signal.signal(signal.SIGTERM, previous)
    started = time.monotonic()
    assert processes.stop(service, timeout_s=20) is True
    assert time.monotonic() - started < 5


@pytest.fixture
def traversable() -> Iterator[Path]:
    """A folder every account can traverse, as the folders above a runtime home must be (pytest's own
    base folder is owner-only)."""
    root = Path(tempfile.mkdtemp(prefix="traverse-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root starts servers under other accounts")
def test_two_server_accounts_both_traverse_the_stack_folder_and_read_nothing(traversable: Path):
    """Postgres and nginx both run under their own accounts below one owner-only home: granting the
    second must not take traversal from the first, and neither may list or read what lies there."""
    home = traversable / "home"
    (home / "stack" / "postgres").mkdir(parents=True, mode=0o700)
    (home / "stack" / "proxy").mkdir(mode=0o700)
    (home / "stack" / "credentials.json").write_text("{}")
    (home / "stack" / "credentials.json").chmod(0o600)
    home.chmod(0o700)
    (home / "stack").chmod(0o700)
    let_traverse(home, home / "stack" / "postgres" / "data", "postgres")
    let_traverse(home, home / "stack" / "proxy" / "nginx.conf", "www-data")
    for account, own in (("postgres", "postgres"), ("www-data", "proxy")):
        hand_over(account, home / "stack" / own)

        def can(test: str, path: Path, account: str = account) -> bool:
            return subprocess.run(["test", test, str(path)], user=account, check=False).returncode == 0

        assert can("-w", home / "stack" / own), f"{account} cannot reach its folder"
        assert not can("-r", home / "stack"), f"{account} can list the stack's folder"
        assert not can("-r", home / "stack" / "credentials.json"), f"{account} can read the credentials"
