"""Request bodies over the limit get 413 before anything reads or parses them."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import Body, FastAPI
from fastapi.testclient import TestClient
from starlette.requests import Request

import serving.app
from resources.signing import public_key_pem
from serving.app import DEFAULT_MAX_BODY_BYTES, create_app
from serving.body_limit import JSON_OVERHEAD_BYTES, BodyLimit
from tests.serving import api_key_access, expected_outputs, write_model

HANDLER = "tests.serving:TinyHandler"
INPUTS = [[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]]
LIMIT = 10_000
MB = 1_000_000


def _tiny_app(limit: int = LIMIT) -> tuple[FastAPI, list[dict]]:
    """A FastAPI app behind the limit, whose one route records every call it gets."""
    calls: list[dict] = []
    app = FastAPI()

    @app.post("/echo")
    def echo(params: Annotated[dict[str, Any], Body()]) -> dict:
        calls.append(params)
        return {"keys": len(params)}

    @app.get("/ping")
    def ping() -> dict:
        calls.append({})
        return {"ok": True}

    app.add_middleware(BodyLimit, max_body_bytes=limit)
    return app, calls


def _json_of_size(size: int) -> bytes:
    """A JSON object of exactly `size` bytes."""
    head, tail = b'{"pad": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def _drive(app, *, chunks: int, chunk: bytes, headers=(), path: str = "/echo") -> dict:
    """Send a chunked POST of `chunks` pieces of `chunk` straight to the ASGI app; count what it pulled."""
    pulled = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        if pulled < chunks:
            pulled += 1
            return {"type": "http.request", "body": chunk, "more_body": True}
        if pulled == chunks:
            pulled += 1
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)  # a client waits for its answer; the app must not wait for this
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked"), *headers],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 8000),
    }

    async def run() -> None:
        await asyncio.wait_for(app(scope, receive, send), timeout=30)

    asyncio.run(run())
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return {
        "status": start["status"],
        "body": body,
        "pulled": pulled,
        "starts": sum(m is start for m in sent),
    }


def test_a_body_under_or_at_the_limit_reaches_the_handler():
    app, calls = _tiny_app()
    client = TestClient(app)
    assert client.post("/echo", json={"a": 1}).json() == {"keys": 1}
    at_limit = client.post(
        "/echo", content=_json_of_size(LIMIT), headers={"content-type": "application/json"}
    )
    assert at_limit.status_code == 200 and len(calls) == 2
    assert client.get("/ping").status_code == 200


def test_a_declared_length_over_the_limit_gets_413_without_the_body_being_read(monkeypatch):
    reads: list[int] = []
    body = Request.body

    async def recorded(self):
        reads.append(1)
        return await body(self)

    monkeypatch.setattr(Request, "body", recorded)
    app, calls = _tiny_app()
    client = TestClient(app)
    answer = client.post(
        "/echo", content=_json_of_size(LIMIT + 1), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 413 and "over the limit of 10000 bytes" in answer.json()["detail"]
    assert answer.headers["connection"] == "close"
    assert calls == [] and reads == []  # neither the handler nor the body parser ran


def test_a_chunked_body_gets_413_as_soon_as_it_passes_the_limit():
    app, calls = _tiny_app()
    chunk = b"x" * 1_000
    answer = _drive(app, chunks=100_000, chunk=chunk)  # 100 MB announced by no header
    assert answer["status"] == 413 and answer["starts"] == 1  # one answer: the app's own is dropped
    assert answer["pulled"] == LIMIT // len(chunk) + 1  # it stopped reading right past the limit
    assert calls == []


def test_a_chunked_body_under_the_limit_is_read_whole():
    app, calls = _tiny_app()
    answer = _drive(app, chunks=5, chunk=b" " * 100)  # whitespace: not JSON, but read to the end
    assert answer["status"] == 422 and answer["pulled"] == 6


def test_a_content_length_that_is_not_a_byte_count_gets_400():
    app, calls = _tiny_app()
    for value in (b"-1", b"12abc", b"\xb2", b""):
        answer = _drive(app, chunks=1, chunk=b"{}", headers=[(b"content-length", value)])
        assert answer["status"] == 400 and answer["pulled"] == 0
    two = [(b"content-length", b"2"), (b"content-length", b"3")]
    assert _drive(app, chunks=1, chunk=b"{}", headers=two)["status"] == 400
    huge = [(b"content-length", b"9" * 5000)]  # too long for int(): read as over any limit
    assert _drive(app, chunks=1, chunk=b"{}", headers=huge)["status"] == 413
    assert calls == []


def test_the_default_limit_admits_the_largest_endpoint_body():
    from serving.diagnostic_handler import MAX_DICOM_BASE64
    from serving.ecommerce import MAX_BODY_BYTES as RECOMMENDER_LIMIT
    from serving.healthcare import MAX_BODY_BYTES as DIAGNOSTIC_LIMIT

    largest = len(b'{"dicom": ""}') + MAX_DICOM_BASE64
    assert DEFAULT_MAX_BODY_BYTES == DIAGNOSTIC_LIMIT == MAX_DICOM_BASE64 + JSON_OVERHEAD_BYTES >= largest
    assert DEFAULT_MAX_BODY_BYTES < 60 * MB
    assert RECOMMENDER_LIMIT == JSON_OVERHEAD_BYTES


@pytest.fixture(scope="module")
def release_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_the_model_server_refuses_a_60_mb_body_before_parsing_it(home, tmp_path, release_key, monkeypatch):
    worker_calls: list[str] = []
    call_worker = serving.app.call_worker

    def recorded(app, method, params, timeout=None):
        worker_calls.append(method)
        return call_worker(app, method, params, timeout)

    monkeypatch.setattr(serving.app, "call_worker", recorded)
    model_dir = write_model(tmp_path / "models" / "v1", release_key, version=1)
    access, auth = api_key_access()
    app = create_app(
        model_dir, [public_key_pem(release_key)], HANDLER, state_file=home / "versions.json", access=access
    )
    rows = b",".join([b"[1.0,2.0,3.0]"] * (60 * MB // 14 + 1))
    huge = b'{"inputs": [' + rows + b"]}"
    assert len(huge) > 60 * MB
    with TestClient(app, headers=auth) as client:
        started = time.perf_counter()
        answer = client.post("/predict", content=huge, headers={"content-type": "application/json"})
        elapsed = time.perf_counter() - started
        assert answer.status_code == 413, answer.text
        assert elapsed < 2.0 and worker_calls == []

        small = client.post("/predict", json={"inputs": INPUTS})
        assert small.status_code == 200, small.text
        outputs = [v for row in small.json()["outputs"] for v in row]
        assert outputs == pytest.approx([v for row in expected_outputs(INPUTS) for v in row], abs=1e-5)
        assert worker_calls == ["predict"]
        metrics = client.get("/metrics").text
        assert 'serving_requests_total{endpoint="/predict",status="413"} 1.0' in metrics

    # The same body, streamed without a length: cut off right past the limit, the handler never reached.
    chunk = b" " * MB
    credential = [(b"authorization", auth["Authorization"].encode())]
    answer = _drive(app, chunks=60, chunk=chunk, path="/predict", headers=credential)
    assert answer["status"] == 413 and answer["pulled"] == DEFAULT_MAX_BODY_BYTES // MB + 1
    assert worker_calls == ["predict"]
