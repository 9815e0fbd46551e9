"""A pool of isolated workers on one release, so that concurrent requests do not queue behind one process.

Each member is a `WorkerClient` with the same limits; a request takes whichever
member is free. The pool has the client's interface, so the server, its health
check and the release watch (`successor`, `retire`) treat one worker and many
alike: a verified successor release is a pool of the same size, each of its
members verified on start.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serving.worker_client import WorkerClient, WorkerError

DEFAULT_WORKERS = 1


def workers_from_env() -> int:
    """`SERVING_WORKERS`: how many isolated workers answer requests side by side (default 1)."""
    raw = os.environ.get("SERVING_WORKERS", str(DEFAULT_WORKERS))
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ValueError(
            f"SERVING_WORKERS={raw!r} is not a whole number of workers of at least 1; set it to e.g. the "
            "number of cores the server may use, or unset it for one worker."
        )
    return int(raw)


class WorkerPool:
    """`size` interchangeable workers; thread-safe, one request per worker at a time."""

    def __init__(self, workers: Sequence[WorkerClient]):
        if not workers:
            raise ValueError("a worker pool needs at least one worker")
        self.workers = list(workers)
        self._free: queue.Queue[WorkerClient] = queue.Queue()
        for worker in self.workers:
            self._free.put(worker)
        self._replaced_by: WorkerPool | None = None

    @classmethod
    def of(
        cls,
        size: int,
        model_dir: Path,
        trusted_keys: Sequence[bytes | str] | Path,
        handler: str,
        **limits: Any,
    ) -> WorkerPool:
        """`size` workers on `model_dir` with the same limits and callbacks (see `WorkerClient`)."""
        if size < 1:
            raise ValueError(f"a worker pool needs at least one worker, got {size}")
        return cls([WorkerClient(model_dir, trusted_keys, handler, **limits) for _ in range(size)])

    @property
    def size(self) -> int:
        return len(self.workers)

    @property
    def model_dir(self) -> Path:
        return self.workers[0].model_dir

    @property
    def info(self) -> dict[str, Any] | None:
        return self.workers[0].info

    @property
    def pid(self) -> int | None:
        return self.workers[0].pid

    @property
    def pids(self) -> list[int | None]:
        return [worker.pid for worker in self.workers]

    def alive(self) -> bool:
        return all(worker.alive() for worker in self.workers)

    def start(self) -> dict[str, Any]:
        """Start every worker (each verifies the release); raises WorkerUnavailable if one is refused."""
        return [worker.start() for worker in self.workers][0]

    def ensure_started(self) -> dict[str, Any]:
        return self.start()

    def request(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0) -> dict:
        """Send one request to a free worker, waiting up to `timeout` for one to be free."""
        if self._replaced_by is not None:
            return self._replaced_by.request(method, params, timeout)
        try:
            worker = self._free.get(timeout=timeout)
        except queue.Empty:
            raise WorkerError(f"all {self.size} workers stayed busy for {timeout} s; try again") from None
        try:
            return worker.request(method, params, timeout)
        finally:
            self._free.put(worker)

    def successor(self, model_dir: Path, trusted_keys: Sequence[bytes | str], *, floor: int) -> WorkerPool:
        """A pool of the same size on another release (not started: starting it is the verification)."""
        return WorkerPool([worker.successor(model_dir, trusted_keys, floor=floor) for worker in self.workers])

    def retire(self, replacement: WorkerPool) -> None:
        """Stop these workers; a request that still reaches this pool or one of them goes to `replacement`."""
        self._replaced_by = replacement
        for old, new in zip(self.workers, replacement.workers, strict=True):
            old.retire(new)

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
