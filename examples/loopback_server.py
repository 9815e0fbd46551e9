"""A uvicorn app factory served in its own process on a free loopback port while a block runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from resources.runtime import REPO_ROOT


@contextmanager
def served_on_loopback(
    factory: str, environment: dict[str, str] | None = None, *, ready_within: float = 120.0
) -> Iterator[str]:
    """Serve `factory` (`module:function`) until the block ends; yields the base URL once `/healthz` is 200.

    Raises RuntimeError if the server exits, or is not ready within `ready_within` seconds (a model
    server loads and verifies its release first).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "uvicorn", "--factory", factory]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, **(environment or {})})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_within
        while not _healthy(base):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{factory} did not answer /healthz on {base}; see its log above")
            time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=60)


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
