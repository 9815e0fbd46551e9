"""Serving: what the isolated workers cost a caller, at 1, 8 and 64 concurrent clients.

    make bench                                      # 400 requests per client count
    SERVING_REQUESTS=100 python -m benchmarks.serving

The same signed recommender release (random weights at the shape of a
20,000-user, 2,000-item shop: latency does not depend on what was learnt) is
served on loopback by uvicorn in a process of its own, behind the same
API-key access control and `/recommend` route:
- through the production app (`serving.app.create_app`) with a pool of one
  and of two isolated, resource-limited workers (`SERVING_WORKERS`), each
  request a JSON line to a free worker and back;
- in-process, the baseline: the same release loaded by the same secure
  loader into the server itself, the handler called directly.
Clients are asyncio tasks in this process on one httpx connection pool (a
connection each), each sending its share of the requests one after another.
Reports p50/p99 latency, requests per second and errors (any answer but
200) per client count, and each pool's ratios to the baseline, in the
"serving" section of `reports/bench.json` (the top-level ratio and error
count are the larger pool's).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import torch
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI, Query

from benchmarks.report import write_section
from domain.ecommerce import recommender
from examples.loopback_server import served_on_loopback
from resources.loader import SecureModelLoader
from resources.signing import public_key_pem, sign_model
from serving.access import AccessControl, AccessPolicy, ApiKeyClient, ApiKeys, hash_api_key, new_api_key
from serving.app import add_worker_route, create_app
from serving.ecommerce import SCOPE, RecommendParams
from serving.recommender_handler import RecommenderHandler

HANDLER = "serving.recommender_handler:RecommenderHandler"
CLIENTS = (1, 8, 64)
POOLS = (1, 2)  # isolated workers behind one server
USERS, ITEMS, DIM = 20_000, 2_000, 32


def signed_release(folder: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    """A signed recommender release with random weights."""
    model = recommender.MatrixFactorization(USERS, ITEMS, DIM)
    model.reset_parameters(torch.Generator().manual_seed(0))
    index = recommender.IdIndex(
        users=tuple(f"u{i:07d}" for i in range(USERS)), items=tuple(f"i{i:05d}" for i in range(ITEMS))
    )
    directory = folder / "release" / "v1"
    recommender.save_model(model, index, recommender.TrainConfig(), {}, directory, version=1)
    sign_model(directory, key)
    return directory


def _access() -> AccessPolicy:
    """The one API-key client both servers admit (its key's hash from the environment), unthrottled."""
    client = ApiKeyClient("bench", os.environ["BENCH_API_KEY_HASH"], frozenset({SCOPE}), 10**9)
    return AccessPolicy(api_keys=ApiKeys([client]))


def worker_app() -> FastAPI:
    """uvicorn factory: the production app serving the release through the isolated worker."""
    model_dir, folder = Path(os.environ["BENCH_MODEL_DIR"]), Path(os.environ["BENCH_FOLDER"])
    keys = [(folder / "release.pem").read_bytes()]
    app = create_app(
        model_dir, keys, HANDLER, state_file=folder / "versions.json", access=_access(), scope=SCOPE
    )
    add_worker_route(app, "/recommend", "recommend", RecommendParams)
    return app


def in_process_app() -> FastAPI:
    """uvicorn factory, the baseline: the release loaded by the same secure loader into the server itself."""
    model_dir, folder = Path(os.environ["BENCH_MODEL_DIR"]), Path(os.environ["BENCH_FOLDER"])
    handler = RecommenderHandler()
    loader = SecureModelLoader([(folder / "release.pem").read_bytes()], handler.architectures)
    model = loader.load(model_dir)
    app = FastAPI()
    app.add_middleware(
        AccessControl,
        policy=_access(),
        route_scopes={"/recommend": SCOPE},
        model_version=lambda: model.version,
    )

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}  # the model was loaded before the app was made

    @app.get("/recommend")
    def recommend(params: Annotated[RecommendParams, Query()]) -> Any:
        return handler.recommend(model, params.model_dump(mode="json"))

    return app


async def load(base: str, headers: dict[str, str], clients: int, requests: int) -> dict[str, float]:
    """`requests` GET /recommend spread over `clients` concurrent callers: latency quantiles and rate."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as http:

        async def call(n: int) -> None:
            nonlocal errors
            started = time.perf_counter()
            answer = await http.get("/recommend", params={"user_id": f"u{n * 7919 % USERS:07d}", "k": 10})
            latencies.append(time.perf_counter() - started)
            errors += answer.status_code != 200

        async def caller(first: int) -> None:
            for n in range(first, requests, clients):
                await call(n)

        await asyncio.gather(*(call(n) for n in range(clients)))  # opens the connections; not counted
        latencies.clear()
        errors = 0
        started = time.perf_counter()
        await asyncio.gather(*(caller(first) for first in range(clients)))
        elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "p50_ms": round(quantiles[49] * 1000, 3),
        "p99_ms": round(quantiles[98] * 1000, 3),
        "requests_per_second": round(len(latencies) / elapsed, 1),
        "errors": errors,
    }


def measure(folder: Path, requests: int) -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    (folder / "release.pem").write_bytes(public_key_pem(key))
    api_key = new_api_key()
    environment = {
        "BENCH_MODEL_DIR": str(signed_release(folder, key)),
        "BENCH_FOLDER": str(folder),
        "BENCH_API_KEY_HASH": hash_api_key(api_key),
    }
    headers = {"Authorization": f"Bearer {api_key}"}
    servers = {"in_process": ("in_process_app", {})}
    servers |= {f"workers_{n}": ("worker_app", {"SERVING_WORKERS": str(n)}) for n in POOLS}
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for path, (factory, settings) in servers.items():
        with served_on_loopback(f"benchmarks.serving:{factory}", environment | settings) as base:
            results[path] = {n: asyncio.run(load(base, headers, n, max(requests, 2 * n))) for n in CLIENTS}
    for path in servers.keys() - {"in_process"}:
        for n, row in results[path].items():
            baseline = results["in_process"][n]
            row["p99_ratio_vs_in_process"] = ratio(row["p99_ms"], baseline["p99_ms"])
            row["throughput_ratio_vs_in_process"] = ratio(
                row["requests_per_second"], baseline["requests_per_second"]
            )
    pool = f"workers_{max(POOLS)}"
    return {
        "p99_ratio_vs_in_process_8_clients": results[pool][8]["p99_ratio_vs_in_process"],
        "errors_64_clients": results[pool][64]["errors"],
        "workers": max(POOLS),
        "requests_per_client_count": requests,
        "clients": {str(n): {path: results[path][n] for path in servers} for n in CLIENTS},
    }


def ratio(value: float, baseline: float) -> float:
    return round(value / baseline, 3)


def print_table(section: dict[str, Any]) -> None:
    print(
        f"serving /recommend, {section['requests_per_client_count']} requests per row; ratios to in-process"
    )
    print(
        f"{'clients':>7} {'server':<11} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>6} "
        f"{'p99 ratio':>9}"
    )
    for n, row in section["clients"].items():
        for path, r in row.items():
            shown = f"{r['p99_ratio_vs_in_process']:8.2f}x" if "p99_ratio_vs_in_process" in r else ""
            print(
                f"{n:>7} {path:<11} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
                f"{r['requests_per_second']:8.0f} {r['errors']:6d} {shown:>9}"
            )


def main() -> None:
    requests = int(os.environ.get("SERVING_REQUESTS", "400"))
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as folder:
        section = measure(Path(folder), requests)
    print_table(section)
    write_section("serving", section)


if __name__ == "__main__":
    main()
