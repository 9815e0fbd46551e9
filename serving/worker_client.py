"""The server side of isolated inference: start, talk to, restart and stop one worker process.

`WorkerClient` runs `python -P -m serving.worker` with a minimal environment
(no credentials, no pipeline settings), a read-only model directory and the
trusted keys in a private file, and exchanges JSON lines with it.
`successor` starts another worker with the same limits on another release
(the running server's re-verification, `serving.release_watch`), and
`retire` hands a worker's callers over to its successor.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import logging
import os
import queue
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from resources.runtime import REPO_ROOT
from serving.worker import (
    DEFAULT_MAX_CPU_SECONDS,
    DEFAULT_MAX_MEMORY_MB,
    DEFAULT_MAX_OPEN_FILES,
    MAX_LINE_BYTES,
    read_trusted_keys,
    write_trusted_keys,
)

log = logging.getLogger(__name__)


class WorkerError(RuntimeError):
    """The worker could not answer."""


class WorkerUnavailable(WorkerError):
    """No worker is running: the model was refused or the process could not start."""


class WorkerTimeout(WorkerError):
    """The worker did not answer in time (it was killed; the next request starts a new one)."""


class RequestFailed(WorkerError):
    """The handler refused or failed the request; `kind` is bad_request, not_found or internal."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


def make_read_only(model_dir: Path) -> None:
    """chmod the model directory 0555 and its files 0444 (or check it is already unwritable)."""
    model_dir = Path(model_dir)
    paths = sorted(model_dir.rglob("*"), reverse=True) + [model_dir]
    for path in paths:
        if path.is_symlink():
            continue  # the loader refuses links; never chmod through one
        mode = 0o555 if path.is_dir() else 0o444
        if stat.S_IMODE(path.lstat().st_mode) == mode:
            continue  # a chmod would change the ctime the release watch looks at, for nothing
        try:
            os.chmod(path, mode)
        except PermissionError as exc:
            if os.access(path, os.W_OK):
                raise WorkerUnavailable(
                    f"cannot make {path} read-only ({exc}); refusing to serve it"
                ) from exc
    if os.stat(model_dir).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise WorkerUnavailable(f"{model_dir} is still writable; refusing to serve it")


_SENTINEL_EOF = object()


class WorkerClient:
    """Starts, talks to, restarts and stops one worker process. Thread-safe (one request at a time)."""

    def __init__(
        self,
        model_dir: Path,
        trusted_keys: Sequence[bytes | str] | Path,
        handler: str,
        *,
        state_file: Path,
        floor: int = 0,
        max_memory_mb: int = DEFAULT_MAX_MEMORY_MB,
        max_cpu_seconds: int = DEFAULT_MAX_CPU_SECONDS,
        max_open_files: int = DEFAULT_MAX_OPEN_FILES,
        threads: int = 2,
        load_timeout: float = 120.0,
        restart_backoff: float = 5.0,
        python: str = sys.executable,
        on_loaded: Callable[[dict[str, Any]], None] | None = None,
        on_load_failure: Callable[[str], None] | None = None,
    ):
        self.model_dir = Path(model_dir).absolute()
        self.handler = handler
        self.state_file = Path(state_file)
        self.floor = floor
        self.max_memory_mb = max_memory_mb
        self.max_cpu_seconds = max_cpu_seconds
        self.max_open_files = max_open_files
        self.threads = threads
        self.load_timeout = load_timeout
        self.restart_backoff = restart_backoff
        self.python = python
        self.on_loaded = on_loaded
        self.on_load_failure = on_load_failure
        self._keys_dir: tempfile.TemporaryDirectory[str] | None = None
        if isinstance(trusted_keys, Path | str) and not isinstance(trusted_keys, bytes):
            self._keys_file = Path(trusted_keys).absolute()
            read_trusted_keys(self._keys_file)  # fail early on a bad file
        else:
            # 0700; removed by `close`, or when the client is collected or the interpreter exits.
            self._keys_dir = tempfile.TemporaryDirectory(prefix="serving-keys-", ignore_cleanup_errors=True)
            self._keys_file = write_trusted_keys(
                Path(self._keys_dir.name) / "trusted-keys.json", list(trusted_keys)
            )
            os.chmod(self._keys_file, 0o444)
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._proc: subprocess.Popen[bytes] | None = None
        self._responses: queue.Queue[Any] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=200)
        self.info: dict[str, Any] | None = None
        self.limits: dict[str, Any] | None = None
        self.last_error: str | None = None
        self._failed_at: float | None = None
        self._replaced_by: WorkerClient | None = None
        self.starts = 0

    # -- lifecycle --

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stderr_tail(self, lines: int = 20) -> str:
        return "\n".join(list(self._stderr)[-lines:])

    def _command(self) -> list[str]:
        return [
            self.python, "-P", "-s", "-m", "serving.worker",
            "--model-dir", str(self.model_dir),
            "--trusted-keys", str(self._keys_file),
            "--handler", self.handler,
            "--state-file", str(self.state_file.absolute()),
            "--max-memory-mb", str(self.max_memory_mb),
            "--max-cpu-seconds", str(self.max_cpu_seconds),
            "--max-open-files", str(self.max_open_files),
            "--threads", str(self.threads),
            "--floor", str(self.floor),
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        """A minimal environment: no credentials, no PIPELINE_HOME, only what Python needs."""
        return {
            "PATH": os.defpath,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PYTHONPATH": str(REPO_ROOT),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": str(self.threads),
            "MKL_NUM_THREADS": str(self.threads),
            "MALLOC_ARENA_MAX": "2",
            "DAGSTER_DISABLE_TELEMETRY": "1",
        }

    def start(self) -> dict[str, Any]:
        """Start the worker and wait until the model loaded; raises WorkerUnavailable if refused."""
        info = self.info
        if info is not None and self.alive():
            return info  # fast path: health checks do not queue behind a long request
        with self._lock:
            if self.alive() and self.info is not None:
                return self.info
            if self._failed_at is not None and time.monotonic() - self._failed_at < self.restart_backoff:
                raise WorkerUnavailable(self.last_error or "the worker failed to start")
            self._stop_locked()
            try:
                return self._start_locked()
            except Exception as exc:  # refused model, or the process could not be started at all
                self._failed_at = time.monotonic()
                self.last_error = (
                    str(exc) if isinstance(exc, WorkerUnavailable) else f"{type(exc).__name__}: {exc}"
                )
                self._stop_locked()
                if self.on_load_failure:
                    self.on_load_failure(self.last_error)
                if isinstance(exc, WorkerUnavailable):
                    raise
                raise WorkerUnavailable(self.last_error) from exc

    def ensure_started(self) -> dict[str, Any]:
        return self.start()

    def _start_locked(self) -> dict[str, Any]:
        make_read_only(self.model_dir)
        self.starts += 1
        self._responses = queue.Queue()
        self._proc = subprocess.Popen(
            self._command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.model_dir.parent,
            env=self._env(),
            close_fds=True,
            start_new_session=True,
        )
        proc, responses = self._proc, self._responses
        threading.Thread(target=self._read_stdout, args=(proc, responses), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(proc,), daemon=True).start()
        try:
            first = responses.get(timeout=self.load_timeout)
        except queue.Empty:
            raise WorkerUnavailable(
                f"the worker did not load {self.model_dir} within {self.load_timeout:.0f} s"
            ) from None
        if first is _SENTINEL_EOF:
            proc.wait(timeout=10)
            raise WorkerUnavailable(
                f"the worker exited with code {proc.returncode} before loading the model: "
                f"{self.stderr_tail(5)}"
            )
        if first.get("fatal") or not first.get("ready"):
            raise WorkerUnavailable(str(first.get("error", first)))
        self.info, self.limits = first["model"], first.get("limits")
        self.last_error, self._failed_at = None, None
        if self.on_loaded:
            self.on_loaded(self.info)
        return self.info

    @staticmethod
    def _read_stdout(proc: subprocess.Popen[bytes], responses: queue.Queue[Any]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("worker %s wrote a non-protocol line: %r", proc.pid, line[:200])
                continue
            if isinstance(message, dict):
                responses.put(message)
        responses.put(_SENTINEL_EOF)

    def _read_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            text = line.decode("utf-8", "replace").rstrip()
            self._stderr.append(text)
            log.debug("worker %s: %s", proc.pid, text)

    def _stop_locked(self, grace: float = 5.0) -> None:
        proc, self._proc, self.info = self._proc, None, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin:
                proc.stdin.close()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)

    def successor(self, model_dir: Path, trusted_keys: Sequence[bytes | str], *, floor: int) -> WorkerClient:
        """A client for another release with this one's handler, limits and anti-rollback state.

        It has no callbacks and is not started: starting it is the verification.
        """
        return WorkerClient(
            model_dir,
            trusted_keys,
            self.handler,
            state_file=self.state_file,
            floor=floor,
            max_memory_mb=self.max_memory_mb,
            max_cpu_seconds=self.max_cpu_seconds,
            max_open_files=self.max_open_files,
            threads=self.threads,
            load_timeout=self.load_timeout,
            restart_backoff=self.restart_backoff,
            python=self.python,
        )

    def retire(self, replacement: WorkerClient) -> None:
        """Stop this worker; a request that still reaches this client goes to `replacement`.

        A request already in flight finishes first (`close` waits for the lock), and one
        that picked this client up just before the swap never restarts the old model.
        """
        replacement.on_loaded, replacement.on_load_failure = self.on_loaded, self.on_load_failure
        self._replaced_by = replacement
        self.close()

    def close(self) -> None:
        with self._lock:
            self._stop_locked()
            if self._keys_dir is not None:
                self._keys_dir.cleanup()
                self._keys_dir = None

    def __enter__(self) -> WorkerClient:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- requests --

    def request(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0) -> dict:
        """Send one request and wait for its answer; (re)starts the worker if it is not running."""
        body = json.dumps(params or {}, separators=(",", ":"), allow_nan=False)
        if len(body) > MAX_LINE_BYTES - 256:
            raise RequestFailed(f"request larger than {MAX_LINE_BYTES} bytes", "bad_request")
        with self._lock:
            if self._replaced_by is not None:
                return self._replaced_by.request(method, params, timeout)
            for attempt in range(2):
                if not self.alive() or self.info is None:
                    self.start()
                rid = next(self._ids)
                payload = f'{{"id":{rid},"method":{json.dumps(method)},"params":{body}}}\n'
                try:
                    assert self._proc is not None and self._proc.stdin is not None
                    self._proc.stdin.write(payload.encode())
                    self._proc.stdin.flush()
                except (BrokenPipeError, OSError):
                    self._stop_locked()  # died between requests: restart once and resend
                    if attempt:
                        raise WorkerError("the worker died before it could take the request") from None
                    continue
                return self._await(rid, method, timeout)
        raise WorkerError("unreachable")  # pragma: no cover

    def _await(self, rid: int, method: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                message = self._responses.get(timeout=max(remaining, 0))
            except queue.Empty:
                self._stop_locked(grace=0.5)
                raise WorkerTimeout(
                    f"{method} took longer than {timeout} s; the worker was stopped"
                ) from None
            if message is _SENTINEL_EOF:
                proc = self._proc
                code = proc.wait(timeout=5) if proc else None
                self._stop_locked()
                raise WorkerError(
                    f"the worker died while handling {method} (exit code {code}; a negative code is the "
                    f"signal, e.g. -9 SIGKILL or -24 SIGXCPU from its resource limits). "
                    f"It restarts on the next request. {self.stderr_tail(3)}"
                )
            if message.get("id") != rid:
                continue  # a late answer to a request that already timed out
            if "error" in message:
                raise RequestFailed(str(message["error"]), str(message.get("kind", "internal")))
            return message["result"]
