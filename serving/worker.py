"""Isolated inference: a resource-limited worker process speaking JSON lines over stdin/stdout.

Run by `serving.worker_client.WorkerClient` (or by hand)::

    python -P -m serving.worker --model-dir DIR --trusted-keys KEYS.json \\
        --handler MODULE:ATTR --state-file FILE [--max-memory-mb N] [--max-cpu-seconds N]

This module is the whole of what runs next to an untrusted model: it imports
the secure loader, the handler's model contract and nothing of the pipeline
(no Dagster, Spark, MLflow; a test keeps it so).

The worker sets its own resource limits (address space, CPU seconds, open
files, file size, no core dumps, no new privileges), then loads the model once
through `SecureModelLoader` (signature verification happens here, at load),
announces ``{"ready": true, "model": {...}, "limits": {...}}`` and answers
requests until stdin closes. If the model is refused it writes one line
``{"error": "...", "stage": "...", "fatal": true}`` and exits non-zero.

Protocol (one JSON object per line)::

    -> {"id": 1, "method": "predict", "params": {...}}
    <- {"id": 1, "result": {...}}
    <- {"id": 1, "error": "...", "kind": "bad_request" | "not_found" | "internal"}

``MODULE:ATTR`` names the *handler*: an object (or a class, instantiated once)
with ``architectures`` (architecture name -> builder from config) and one
method per exposed name in ``methods`` (default ``("predict",)``), each called
as ``method(loaded_model, params) -> dict``. Subclass `ModelHandler` to write
one. ``info`` is always available and returns the loaded model's identity.
A handler's ``accept(loaded_model)`` may refuse a verified model it cannot
serve (ValueError: a fatal refusal at stage ``contract``), e.g. a release
without the statistics its guard needs.

Nothing crosses the process boundary pickled: only JSON text. stdout is the
protocol channel, so the worker moves Python's and C libraries' stdout onto
stderr first (model_signing prints warnings to stdout).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import json
import logging
import os
import resource
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import torch

from resources.loader import LoadedModel, ModelRefused, SecureModelLoader

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_MEMORY_MB = 4096
DEFAULT_MAX_CPU_SECONDS = 3600
DEFAULT_MAX_OPEN_FILES = 64
DEFAULT_MAX_FILE_SIZE_MB = 16
BUILTIN_METHODS = ("info",)
_PR_SET_NO_NEW_PRIVS = 38


class ModelHandler:
    """What a worker serves: architectures built from code, and the methods requests may call.

    ``methods`` lists the names requests may call; each is ``method(model, params) -> dict``.
    Raise ``ValueError``/``KeyError``/``TypeError`` for bad input (reported as ``bad_request``).
    """

    architectures: Mapping[str, Callable[[dict], torch.nn.Module]] = {}
    methods: tuple[str, ...] = ("predict",)

    def accept(self, model: LoadedModel) -> None:
        """Refuse (ValueError) a verified model this handler cannot serve safely; called once, at load."""

    def predict(self, model: LoadedModel, params: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


def resolve_handler(spec: str) -> Any:
    """Import ``module:attr``; a class is instantiated once."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"Handler {spec!r} must look like 'package.module:attribute'.")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    if isinstance(target, type):
        target = target()
    if not isinstance(getattr(target, "architectures", None), Mapping):
        raise TypeError(f"Handler {spec!r} has no 'architectures' mapping.")
    return target


def write_trusted_keys(path: Path, keys: Sequence[bytes | str]) -> Path:
    """Write the trusted release public keys (PEM) as ``{"trusted_release_keys": [...]}``."""
    pems = [key.decode() if isinstance(key, bytes) else key for key in keys]
    path = Path(path)
    path.write_text(json.dumps({"trusted_release_keys": pems}, indent=2))
    return path


def read_trusted_keys(path: Path) -> list[bytes]:
    data = json.loads(Path(path).read_text())
    pems = data.get("trusted_release_keys") if isinstance(data, dict) else data
    if not isinstance(pems, list) or not pems or not all(isinstance(p, str) for p in pems):
        raise ValueError(
            f"{path} must hold a non-empty list of PEM public keys under 'trusted_release_keys'."
        )
    return [p.encode() for p in pems]


def apply_limits(max_memory_mb: int, max_cpu_seconds: int, max_open_files: int, max_file_mb: int) -> dict:
    """Lower soft *and* hard limits (irreversible for this process)."""

    def cap(which: int, value: int, hard_extra: int = 0) -> None:
        _, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        new_hard = value + hard_extra
        if hard != resource.RLIM_INFINITY:
            new_hard = min(new_hard, hard)
        resource.setrlimit(which, (value, new_hard))

    cap(resource.RLIMIT_AS, max_memory_mb * 1024 * 1024)
    # SIGXCPU at the soft limit, SIGKILL at the hard one; the client restarts a worker that died.
    cap(resource.RLIMIT_CPU, max_cpu_seconds, hard_extra=5)
    cap(resource.RLIMIT_NOFILE, max_open_files)
    cap(resource.RLIMIT_FSIZE, max_file_mb * 1024 * 1024)
    cap(resource.RLIMIT_CORE, 0)
    with contextlib.suppress(OSError, AttributeError):  # Linux only: setuid binaries gain nothing
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    return {
        "max_memory_mb": max_memory_mb,
        "max_cpu_seconds": max_cpu_seconds,
        "max_open_files": max_open_files,
        "max_file_mb": max_file_mb,
    }


def _claim_stdout() -> IO[str]:
    """Keep fd 1 for the protocol only: everything else that prints goes to stderr."""
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return protocol


def _send(out: IO[str], message: dict[str, Any]) -> None:
    out.write(json.dumps(message, separators=(",", ":"), allow_nan=False) + "\n")
    out.flush()


def _read_line(stream: IO[bytes]) -> bytes | None:
    """One request line, or None at EOF; an overlong line is drained and reported as b''."""
    line = stream.readline(MAX_LINE_BYTES + 1)
    if not line:
        return None
    if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
        while (rest := stream.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
            pass
        return b""
    return line


def handle_request(handler: Any, model: LoadedModel, raw: bytes) -> dict[str, Any]:
    """Answer one protocol line; never raises."""
    if raw == b"":
        return {
            "id": None,
            "error": f"request line longer than {MAX_LINE_BYTES} bytes",
            "kind": "bad_request",
        }
    try:
        request = json.loads(raw)
    except ValueError as exc:
        return {"id": None, "error": f"request is not JSON: {exc}", "kind": "bad_request"}
    if not isinstance(request, dict):
        return {"id": None, "error": "request must be a JSON object", "kind": "bad_request"}
    rid, method, params = request.get("id"), request.get("method"), request.get("params", {})
    if not isinstance(method, str) or not isinstance(params, dict):
        return {
            "id": rid,
            "error": "request needs a 'method' string and 'params' object",
            "kind": "bad_request",
        }
    if method == "info":
        return {"id": rid, "result": model.info()}
    exposed = tuple(getattr(handler, "methods", ("predict",)))
    function = getattr(handler, method, None) if method in exposed else None
    if not callable(function):
        return {
            "id": rid,
            "error": f"unknown method {method!r}; this worker serves {exposed}",
            "kind": "not_found",
        }
    try:
        with torch.inference_mode():
            result = function(model, params)
        if not isinstance(result, dict):
            raise TypeError(f"handler method {method!r} returned {type(result).__name__}, not a dict")
        json.dumps(result, allow_nan=False)  # fail here, not half-way through the response line
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        return {"id": rid, "error": f"{type(exc).__name__}: {exc}", "kind": "bad_request"}
    except MemoryError:
        return {"id": rid, "error": "the worker ran out of its memory limit", "kind": "internal"}
    except Exception as exc:
        log.exception("handler method %s failed", method)
        return {"id": rid, "error": f"{type(exc).__name__}: {exc}", "kind": "internal"}
    return {"id": rid, "result": result}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True, type=Path)
    parser.add_argument("--trusted-keys", required=True, type=Path, help="JSON file of trusted PEM keys")
    parser.add_argument("--handler", "--architectures", dest="handler", required=True, help="MODULE:ATTR")
    parser.add_argument(
        "--state-file", required=True, type=Path, help="accepted-version state (anti-rollback)"
    )
    parser.add_argument("--max-memory-mb", type=int, default=DEFAULT_MAX_MEMORY_MB)
    parser.add_argument("--max-cpu-seconds", type=int, default=DEFAULT_MAX_CPU_SECONDS)
    parser.add_argument("--max-open-files", type=int, default=DEFAULT_MAX_OPEN_FILES)
    parser.add_argument("--max-file-mb", type=int, default=DEFAULT_MAX_FILE_SIZE_MB)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--floor", type=int, default=0, help="refuse versions older than this (trust store)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    out = _claim_stdout()
    try:
        limits = apply_limits(args.max_memory_mb, args.max_cpu_seconds, args.max_open_files, args.max_file_mb)
        torch.set_num_threads(max(1, args.threads))
        handler = resolve_handler(args.handler)
        trusted = read_trusted_keys(args.trusted_keys)
        loader = SecureModelLoader(trusted, handler.architectures, args.state_file, floor=args.floor)
        model = loader.load(args.model_dir)
        try:
            getattr(handler, "accept", lambda _: None)(model)  # handlers need only `architectures`
        except ValueError as exc:
            raise ModelRefused("contract", str(exc)) from exc
    except ModelRefused as exc:
        _send(out, {"error": str(exc), "stage": exc.stage, "fatal": True})
        return 2
    except MemoryError:
        _send(out, {"error": f"loading needs more than --max-memory-mb {args.max_memory_mb}", "fatal": True})
        return 3
    except Exception as exc:
        _send(out, {"error": f"worker could not start: {type(exc).__name__}: {exc}", "fatal": True})
        return 3
    _send(out, {"ready": True, "model": model.info(), "limits": limits, "pid": os.getpid()})
    stdin = sys.stdin.buffer
    while (raw := _read_line(stdin)) is not None:
        if raw.strip() == b"" and raw != b"":
            continue
        _send(out, handle_request(handler, model, raw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
