"""Re-verification of a running server's release: a model replaced under the server is refused.

A server verifies its release once, when its worker starts, and then serves
from memory. Whoever can write the release folder can later overwrite the
served version in place (trojaned weights signed by their own key), point
`current` at an older, validly signed release (a rollback) or publish a
release the operator never trusted. `ReleaseWatch` re-verifies the release
that `current` names:

- when the pointer or the release's files change (their inode, size, mtime
  and ctime, polled every `poll_seconds`: a few `stat` calls; a file's
  mtime can be set back, its ctime cannot), and
- on a timer, every `interval_seconds` (`SERVING_REVERIFY_SECONDS`, default
  300), whether or not anything seemed to change: the trust store's keys and
  floor can change without the release changing. Each verification loads
  the model once in a fresh worker, so a short interval costs CPU.

Each verification starts fresh isolated workers on the candidate, as many
as serve now (`WorkerPool.successor`), each checking signature, digests,
the trusted keys and the rollback floor read again from the operator's
trust store, and the accepted-version state. The serving process never
loads the candidate. A candidate that verifies and differs from the served
model is swapped in (a promoted successor); the old workers are retired. A candidate that is
refused leaves the last verified model serving and the server *degraded*:
`/healthz` says so with the reason (HTTP 200, so traffic keeps flowing to
the verified model: a 503 would turn every tampering with the folder into
an outage), `serving_release_refusals` counts it (once per refused
verification: a release left in place is refused, and counted, again at
each timer tick), `serving_degraded` is 1, and the reason is logged. The
server leaves the degraded state when a verification passes again (the
folder restored, or a valid successor).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from resources.release_folder import ReleaseFolder
from resources.trust_store import TrustStore
from serving.worker_client import WorkerUnavailable
from serving.worker_pool import WorkerPool

log = logging.getLogger(__name__)

DEFAULT_REVERIFY_SECONDS = 300.0
DEFAULT_POLL_SECONDS = 1.0


def reverify_seconds_from_env() -> float:
    """`SERVING_REVERIFY_SECONDS`: how often the served release is re-verified even when unchanged."""
    raw = os.environ.get("SERVING_REVERIFY_SECONDS", str(DEFAULT_REVERIFY_SECONDS))
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(
            f"SERVING_REVERIFY_SECONDS={raw!r} is not a positive number of seconds; set it to e.g. "
            f"{DEFAULT_REVERIFY_SECONDS:.0f}, or unset it for the default."
        )
    return seconds


def fingerprint(pointer: Path, release: Path | None) -> tuple:
    """What changes when the pointer or the release's files are replaced, renamed or rewritten."""

    def stat(path: Path) -> tuple:
        try:
            st = path.stat()
        except OSError:
            return (str(path), None)
        return (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    files = sorted(release.rglob("*")) if release is not None and release.is_dir() else []
    return (stat(pointer), stat(release) if release else None, *(stat(f) for f in files))


@dataclass
class Refusal:
    """Why the release on disk is not served."""

    release: str
    reason: str
    at: float


class ReleaseWatch:
    """Re-verifies `model_name`'s current release for one app and swaps in a verified successor.

    Protects a running server against a model replaced under it: tampered or
    unknown-key releases and rollbacks are refused by an isolated worker, and
    the last verified model keeps serving.
    """

    def __init__(
        self,
        model_name: str,
        folder: ReleaseFolder,
        trust: TrustStore,
        *,
        interval_seconds: float = DEFAULT_REVERIFY_SECONDS,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
    ):
        if interval_seconds <= 0 or poll_seconds <= 0:
            raise ValueError("re-verification and poll intervals must be positive numbers of seconds")
        self.model_name = model_name
        self.folder = folder
        self.trust = trust
        self.interval_seconds = interval_seconds
        self.poll_seconds = min(poll_seconds, interval_seconds)
        self.refusal: Refusal | None = None
        self._seen: tuple | None = None
        self._due = 0.0
        self._stop = threading.Event()
        self._swap = threading.Lock()
        self._thread: threading.Thread | None = None
        self._app: FastAPI | None = None

    @property
    def pointer(self) -> Path:
        return self.folder.root / self.model_name / "current.json"

    def start(self, app: FastAPI) -> None:
        """Watch in a daemon thread; the release the app started on is the one first seen."""
        self._app = app
        served: WorkerPool = app.state.worker
        self._seen = fingerprint(self.pointer, served.model_dir)
        self._due = time.monotonic() + self.interval_seconds
        self._thread = threading.Thread(
            target=self._run, name=f"release-watch-{self.model_name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching; a verification under way is abandoned (its worker is closed)."""
        self._stop.set()
        with self._swap:
            pass  # a swap in progress finishes before the app closes its worker
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.check()
            except Exception:  # the watch must outlive one bad tick; the next one tries again
                log.exception("re-verifying the %s release failed", self.model_name)

    def check(self) -> bool:
        """Re-verify if the release changed or the timer is due; True when a verification ran."""
        try:
            release, problem = self.folder.current(self.model_name), None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            release, problem = None, f"the current pointer is unreadable: {exc}"
        seen = fingerprint(self.pointer, release)
        if seen == self._seen and time.monotonic() < self._due:
            return False
        self._seen, self._due = seen, time.monotonic() + self.interval_seconds
        if problem is not None or release is None:
            self._refuse(str(self.pointer), problem or "the current pointer was removed")
        else:
            self.verify(release)
        return True

    def verify(self, release: Path) -> None:
        """Start an isolated worker on `release`; swap it in if it verifies and is not the served model."""
        assert self._app is not None, "start() the watch first"
        keys = self.trust.trusted_release_keys()
        if not keys:
            self._refuse(str(release), f"the trust store at {self.trust.root} lists no release key")
            return
        floor = self.trust.release_floor(self.model_name)
        served: WorkerPool = self._app.state.worker
        candidate = served.successor(release, keys, floor=floor.version if floor else 0)
        try:
            info = candidate.start()
        except WorkerUnavailable as exc:
            candidate.close()
            self._refuse(str(release), str(exc))
            return
        with self._swap:
            if self._stop.is_set():
                candidate.close()
                return
            if self.refusal is not None:
                log.warning("%s release verifies again; no longer degraded", self.model_name)
            self.refusal = None  # cleared before the swap: /healthz never shows the new model as degraded
            self._app.state.metrics.release_verified()
            if _same_model(served, info, release):
                candidate.close()
                return
            self._app.state.metrics.release_swapped(info)
            self._app.state.worker = candidate
            served.retire(candidate)  # waits for the old worker's request in flight, if any
            log.warning(
                "serving %s v%s (signer %s) from %s: it verified in an isolated worker",
                self.model_name, info["version"], info["signer"], release,
            )  # fmt: skip

    def _refuse(self, release: str, reason: str) -> None:
        self.refusal = Refusal(release, reason, time.time())
        if self._app is not None:
            self._app.state.metrics.release_refused()
        log.error(
            "refused the %s release at %s; still serving the last verified model: %s",
            self.model_name, release, reason,
        )  # fmt: skip

    def health(self) -> dict[str, Any] | None:
        """The degraded part of `/healthz`, or None while the release on disk is the verified one."""
        refusal = self.refusal
        if refusal is None:
            return None
        return {
            "status": "degraded",
            "refused_release": refusal.release,
            "reason": refusal.reason,
            "refused_at": refusal.at,
        }


def _same_model(served: WorkerPool, info: dict[str, Any], release: Path) -> bool:
    current = served.info
    return (
        current is not None
        and served.model_dir == Path(release).absolute()
        and current["digest"] == info["digest"]
        and current["version"] == info["version"]
    )
