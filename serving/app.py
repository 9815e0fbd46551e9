"""The FastAPI model server: one isolated worker, `/healthz`, `/predict`, `/metrics`.

`create_app(model_dir, trusted_keys, handler)` returns an app whose lifespan
starts the worker (which verifies the signature and loads the model once) and
stops it at shutdown. Requests are answered from the worker's memory; nothing
is verified per request. A refused model leaves the app up with `/healthz` at
503 and the refusal in its body, so an orchestrator never routes traffic to it.
A release server (`create_release_app`) re-verifies its release while it runs
(`serving.release_watch`): a replaced release is refused, the verified model
keeps serving and `/healthz` says "degraded".

Examples add their own endpoints on top::

    app = create_app(model_dir, keys, "examples.ecommerce.serving:Handler")

    class RecommendQuery(BaseModel):
        user_id: str
        k: int = Field(10, ge=1, le=100)

    add_worker_route(app, "/recommend", "recommend", RecommendQuery)  # GET /recommend?user_id=&k=

Request bodies over `max_body_bytes` (default `DEFAULT_MAX_BODY_BYTES`, sized
for the largest endpoint body, a base64 DICOM) are refused with 413 before
anything parses them.

Every request but `GET /healthz` is authenticated, rate-limited, authorised by
scope and audited (`serving.access`): `/predict` and the routes added with
`add_worker_route` need the model's `scope`, `/metrics` needs `admin`.

Run it with the checked entry point, which refuses to listen beyond loopback
without TLS and authentication (`serving.settings` lists their variables)::

    python -m serving.app --model-dir DIR --trusted-keys keys.json --handler module:attr --scope predict

or, on loopback (tests), ``SERVING_MODEL_DIR=... SERVING_TRUSTED_KEYS=keys.json
SERVING_HANDLER=module:attr uvicorn --factory serving.app:app_from_env``
(`SERVING_SCOPE` sets the model's scope, default `predict`;
`SERVING_MAX_BODY_BYTES` overrides the body limit).
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, FastAPI, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel

from resources.release_folder import ReleaseFolder
from resources.runtime import RuntimeHome
from resources.trust_store import TrustStore
from serving.access import ADMIN_SCOPE, AccessControl, AccessPolicy, route_template
from serving.body_limit import BodyLimit, json_body_limit
from serving.release_watch import ReleaseWatch, reverify_seconds_from_env
from serving.settings import LOOPBACK, ServingSettings, serve
from serving.worker import DEFAULT_MAX_CPU_SECONDS, DEFAULT_MAX_MEMORY_MB
from serving.worker_client import RequestFailed, WorkerError, WorkerTimeout, WorkerUnavailable
from serving.worker_pool import WorkerPool, workers_from_env

log = logging.getLogger(__name__)

# The largest body an endpoint takes is the diagnostic server's: one DICOM file of up to 8 MiB
# (domain.healthcare.dicom.DEFAULT_MAX_BYTES), base64 in a JSON object (serving.diagnostic_handler
# .MAX_DICOM_BASE64 characters). Larger bodies get 413 before anything parses them.
DEFAULT_MAX_BODY_BYTES = json_body_limit(4 * -(-8 * 1024 * 1024 // 3))
_STATUS_FOR_KIND = {"bad_request": 422, "not_found": 404, "internal": 500}


class ServingMetrics:
    """Prometheus metrics of one app, in their own registry (several apps can live in one process)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "serving_requests", "HTTP requests by endpoint and status.", ["endpoint", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "serving_request_latency_seconds", "HTTP request latency by endpoint.", ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )  # fmt: skip
        self.model_version = Gauge(
            "serving_model_version", "Version of the loaded model (-1: none loaded).", registry=self.registry
        )
        self.model_version.set(-1)
        self.model_loaded = Gauge(
            "serving_model_loaded", "1 while the worker has a verified model loaded.", registry=self.registry
        )
        self.load_failures = Counter(
            "serving_model_load_failures", "Worker starts that refused or failed to load the model.",
            registry=self.registry,
        )  # fmt: skip
        self.loads = Counter(
            "serving_model_loads", "Successful worker starts (verified model loads).", registry=self.registry
        )
        self.release_refusals = Counter(
            "serving_release_refusals",
            "Re-verifications that refused the release on disk (the last verified model kept serving).",
            registry=self.registry,
        )
        self.release_swaps = Counter(
            "serving_release_swaps", "Verified successor releases swapped in while running.",
            registry=self.registry,
        )  # fmt: skip
        self.degraded = Gauge(
            "serving_degraded", "1 while the release on disk is refused and an older verified model serves.",
            registry=self.registry,
        )  # fmt: skip

    def loaded(self, info: dict[str, Any]) -> None:
        self.loads.inc()
        self.model_version.set(info["version"])
        self.model_loaded.set(1)

    def load_failed(self, error: str) -> None:
        self.load_failures.inc()
        self.model_loaded.set(0)

    def release_refused(self) -> None:
        self.release_refusals.inc()
        self.degraded.set(1)

    def release_verified(self) -> None:
        self.degraded.set(0)

    def release_swapped(self, info: dict[str, Any]) -> None:
        self.release_swaps.inc()
        self.loaded(info)


def call_worker(app: FastAPI, method: str, params: dict[str, Any], timeout: float | None = None) -> Any:
    """Call a worker method, mapping worker failures to HTTP errors."""
    client: WorkerPool = app.state.worker
    try:
        return client.request(method, params, timeout=timeout or app.state.request_timeout)
    except RequestFailed as exc:
        raise HTTPException(_STATUS_FOR_KIND.get(exc.kind, 500), detail=str(exc)) from exc
    except WorkerTimeout as exc:
        raise HTTPException(504, detail=str(exc)) from exc
    except WorkerUnavailable as exc:
        raise HTTPException(503, detail=f"no model is being served: {exc}") from exc
    except WorkerError as exc:
        raise HTTPException(503, detail=str(exc)) from exc


def add_worker_route(
    app: FastAPI,
    path: str,
    method_name: str,
    param_model: type[BaseModel] | None = None,
    *,
    http_method: str = "GET",
    scope: str | None = None,
    **route_kwargs: Any,
) -> None:
    """Expose worker method `method_name` at `path`, to clients holding `scope` (default: the model's).

    GET reads `param_model`'s fields from the query string (``/recommend?user_id=u1&k=5``);
    POST/PUT read them from the JSON body. Validation happens in the server, before
    anything reaches the worker; the worker gets ``param_model.model_dump(mode="json")``.
    """
    http_method = http_method.upper()

    def endpoint(params: Any = None) -> Any:
        payload = params.model_dump(mode="json") if isinstance(params, BaseModel) else (params or {})
        return call_worker(app, method_name, payload)

    if param_model is None:
        annotation: Any = Annotated[dict[str, Any], Body()] if http_method != "GET" else None
    elif http_method == "GET":
        annotation = Annotated[param_model, Query()]
    else:
        annotation = param_model
    parameters = []
    if annotation is not None:
        parameters.append(inspect.Parameter("params", inspect.Parameter.KEYWORD_ONLY, annotation=annotation))
    endpoint.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    endpoint.__name__ = f"worker_{method_name}"
    app.add_api_route(path, endpoint, methods=[http_method], **route_kwargs)
    app.state.route_scopes[path] = scope or app.state.scope


async def _refuse_without_echo(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 saying what is wrong, without FastAPI's copy of the input (a refused upload may hold PHI)."""
    errors = [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


def create_release_app(
    model_name: str,
    handler: str,
    *,
    title: str,
    home: RuntimeHome,
    trust: TrustStore,
    access: AccessPolicy,
    scope: str,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    reverify_seconds: float | None = None,
) -> FastAPI:
    """A server for the current release of `model_name`, trusting only what the operator's store says.

    The trusted keys and the rollback floor come from `trust`, never from the
    release folder: a server with no local state of its own (a new host, a
    wiped disk) still refuses a release older than the newest on record.
    While it runs, the release is re-verified when it changes and every
    `reverify_seconds` (default `SERVING_REVERIFY_SECONDS`, else 300), so a
    model replaced under the server is refused (`serving.release_watch`).
    """
    folder = ReleaseFolder(home.path("releases"))
    current = folder.current(model_name)
    if current is None:
        raise FileNotFoundError(
            f"No {model_name} release has been published yet: run `make demo` (or the example's "
            "lifecycle job) so that a model is trained, checked and promoted."
        )
    keys = trust.trusted_release_keys()
    if not keys:
        raise FileNotFoundError(
            f"The trust store at {trust.root} lists no release key: an operator must trust the release "
            "key first (`make trust-release-key`)."
        )
    floor = trust.release_floor(model_name)
    return create_app(
        current,
        keys,
        handler,
        state_file=home.path("serving") / f"{model_name}-versions.json",
        floor=floor.version if floor else 0,
        access=access,
        scope=scope,
        title=title,
        max_body_bytes=max_body_bytes,
        watch=ReleaseWatch(
            model_name, folder, trust, interval_seconds=reverify_seconds or reverify_seconds_from_env()
        ),
    )


def create_app(
    model_dir: Path,
    trusted_keys: Sequence[bytes | str] | Path,
    handler: str,
    *,
    state_file: Path,
    access: AccessPolicy,
    scope: str = "predict",
    floor: int = 0,
    max_memory_mb: int = DEFAULT_MAX_MEMORY_MB,
    max_cpu_seconds: int = DEFAULT_MAX_CPU_SECONDS,
    request_timeout: float = 30.0,
    load_timeout: float = 120.0,
    restart_backoff: float = 5.0,
    title: str = "Secure model server",
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    watch: ReleaseWatch | None = None,
    workers: int | None = None,
) -> FastAPI:
    """A FastAPI app serving `model_dir` through a pool of `workers` isolated, resource-limited worker
    processes (default `SERVING_WORKERS`, else 1).

    With `watch`, the release is re-verified while the app runs and a verified
    successor swapped in (`serving.release_watch`).

    Callers are authenticated by `access`; `/predict` needs `scope` (`serving.access`).

    A request body over `max_body_bytes` gets 413 before anything reads or
    parses it (`serving.body_limit`): by its `Content-Length` at once, or, for
    a body of unknown length, as soon as the bytes streamed in pass the limit.
    """
    metrics = ServingMetrics()
    client = WorkerPool.of(
        workers or workers_from_env(),
        model_dir,
        trusted_keys,
        handler,
        state_file=state_file,
        floor=floor,
        max_memory_mb=max_memory_mb,
        max_cpu_seconds=max_cpu_seconds,
        load_timeout=load_timeout,
        restart_backoff=restart_backoff,
        on_loaded=metrics.loaded,
        on_load_failure=metrics.load_failed,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await run_in_threadpool(client.start)
        except WorkerUnavailable as exc:
            log.error("model refused; serving 503 until a valid model is deployed: %s", exc)
        if watch is not None:
            watch.start(app)
        try:
            yield
        finally:
            if watch is not None:
                await run_in_threadpool(watch.stop)
            await run_in_threadpool(app.state.worker.close)  # the served worker: the watch may swap it

    app = FastAPI(title=title, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(RequestValidationError, _refuse_without_echo)
    app.state.worker = client
    app.state.metrics = metrics
    app.state.request_timeout = request_timeout
    app.state.max_body_bytes = max_body_bytes
    app.add_middleware(BodyLimit, max_body_bytes=max_body_bytes)  # inside `observe`: 413s are counted
    app.state.scope = scope
    app.state.route_scopes = {"/predict": scope, "/metrics": ADMIN_SCOPE}
    app.add_middleware(  # outside the body limit: an unauthenticated body is never read
        AccessControl,
        policy=access,
        route_scopes=app.state.route_scopes,
        model_version=lambda: (app.state.worker.info or {}).get("version"),
    )

    @app.middleware("http")
    async def observe(request: Request, call_next: Any) -> Response:
        endpoint = route_template(request.scope)
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
            metrics.requests.labels(endpoint, str(status)).inc()

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        served: WorkerPool = app.state.worker
        try:
            info = served.ensure_started()  # restarts a dead worker (with back-off after a refusal)
        except WorkerUnavailable as exc:
            return JSONResponse({"status": "unavailable", "error": str(exc)}, status_code=503)
        # Degraded is still 200: the verified model keeps answering; only the release on disk is refused.
        degraded = watch.health() if watch is not None else None
        return JSONResponse(
            {
                "status": "ok",
                "version": info["version"],
                "signer": info["signer"],
                "digest": info["digest"],
                "architecture": info["architecture"],
                "worker_pid": served.pid,
                "worker_pids": served.pids,
                **(degraded or {}),
            }
        )

    @app.post("/predict")
    def predict(params: Annotated[dict[str, Any], Body()]) -> Any:
        return call_worker(app, "predict", params)

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory serving.app:app_from_env`` (configured by SERVING_* variables)."""
    try:
        model_dir = Path(os.environ["SERVING_MODEL_DIR"])
        keys = Path(os.environ["SERVING_TRUSTED_KEYS"])
        handler = os.environ["SERVING_HANDLER"]
    except KeyError as exc:
        raise RuntimeError(
            f"Set {exc.args[0]}: SERVING_MODEL_DIR (signed model directory), SERVING_TRUSTED_KEYS "
            "(JSON file of trusted release public keys), SERVING_HANDLER (module:attr)."
        ) from exc
    state = os.environ.get("SERVING_STATE_FILE")
    max_body = int(os.environ.get("SERVING_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES))
    return create_app(
        model_dir,
        keys,
        handler,
        state_file=Path(state) if state else _default_state_file(),
        access=ServingSettings.from_environment().access_policy(RuntimeHome.from_environment()),
        scope=os.environ.get("SERVING_SCOPE", "predict"),
        max_body_bytes=max_body,
    )


def _default_state_file() -> Path:
    return RuntimeHome.from_environment().path("serving") / "accepted-versions.json"


def main(argv: Sequence[str] | None = None) -> None:
    """Serve one model; network and access settings come from the environment (`serving.settings`)."""
    parser = argparse.ArgumentParser(prog="python -m serving.app", description="Serve a signed model.")
    parser.add_argument("--model-dir", required=True, type=Path)
    parser.add_argument("--trusted-keys", required=True, type=Path)
    parser.add_argument("--handler", required=True)
    parser.add_argument("--state-file", type=Path, help="accepted versions (default: under $PIPELINE_HOME)")
    parser.add_argument("--scope", default="predict", help="the scope a client needs for /predict")
    parser.add_argument("--host", default=os.environ.get("SERVING_HOST") or LOOPBACK, help="default loopback")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="larger request bodies get 413"
    )
    args = parser.parse_args(argv)
    state_file = args.state_file or _default_state_file()
    settings = replace(ServingSettings.from_environment(), host=args.host, port=args.port)
    serve(
        lambda access: create_app(
            args.model_dir,
            args.trusted_keys,
            args.handler,
            state_file=state_file,
            access=access,
            scope=args.scope,
            max_body_bytes=args.max_body_bytes,
        ),
        settings,
        RuntimeHome.from_environment(),
        try_it="-H 'content-type: application/json' -d '{\"inputs\": [[1.0]]}' {base}/predict",
    )


if __name__ == "__main__":
    main()
