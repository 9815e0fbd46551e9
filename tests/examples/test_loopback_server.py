"""The loopback server the demo and the serving benchmark start: ready when it says so, gone after."""

import httpx
import pytest
from fastapi import FastAPI

from examples.loopback_server import served_on_loopback


def healthy_app() -> FastAPI:
    app = FastAPI()
    app.get("/healthz")(lambda: {"status": "ok"})
    app.get("/hello")(lambda: {"hello": "world"})
    return app


def test_the_block_runs_once_the_server_is_healthy_and_the_server_stops_after():
    with served_on_loopback(f"{__name__}:healthy_app") as base:
        assert base.startswith("http://127.0.0.1:")
        assert httpx.get(f"{base}/hello").json() == {"hello": "world"}
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/hello", timeout=2)


def test_a_server_that_cannot_start_is_named_rather_than_waited_for():
    with pytest.raises(RuntimeError, match="no_such_factory did not answer /healthz"):
        with served_on_loopback(f"{__name__}:no_such_factory", ready_within=60):
            pass
