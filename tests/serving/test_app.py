"""The model server, started for real: lifespan, isolated worker, metrics, refusals."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from resources.runtime import REPO_ROOT
from resources.signing import key_fingerprint, public_key_pem
from serving.access import add_client
from serving.app import add_worker_route, create_app
from serving.worker import write_trusted_keys
from tests.serving import api_key_access, expected_outputs, write_model

HANDLER = "tests.serving:TinyHandler"
INPUTS = [[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]]
ACCESS, AUTH = api_key_access()


class DescribeQuery(BaseModel):
    user_id: str
    k: int = Field(10, ge=1, le=100)


@pytest.fixture(scope="module")
def release_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _limits(pid: int) -> dict[str, str]:
    limits = {}
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        name, soft = line[:26].strip(), line[26:47].strip()
        limits[name] = soft
    return limits


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{") and line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics:\n{text}")


def test_the_app_serves_a_signed_model_from_an_isolated_worker(home, tmp_path, release_key):
    model_dir = write_model(tmp_path / "models" / "v3", release_key, version=3)
    app = create_app(
        model_dir,
        [public_key_pem(release_key)],
        HANDLER,
        state_file=home / "versions.json",
        access=ACCESS,
        max_memory_mb=2048,
        max_cpu_seconds=600,
    )
    add_worker_route(app, "/describe", "describe", DescribeQuery)
    with TestClient(app, headers=AUTH) as client:
        health = client.get("/healthz")
        assert health.status_code == 200, health.text
        body = health.json()
        assert body["status"] == "ok" and body["version"] == 3
        assert body["signer"] == key_fingerprint(release_key)
        pid = body["worker_pid"]
        assert pid != os.getpid()

        answer = client.post("/predict", json={"inputs": INPUTS})
        assert answer.status_code == 200, answer.text
        torch.testing.assert_close(
            torch.tensor(answer.json()["outputs"]), torch.tensor(expected_outputs(INPUTS))
        )
        assert client.post("/predict", json={"inputs": [[1.0]]}).status_code == 422  # handler's ValueError

        described = client.get("/describe", params={"user_id": "u1", "k": 5})
        assert described.json() == {"k": 5, "user_id": "u1", "version": 3}
        assert client.get("/describe", params={"user_id": "u1", "k": 0}).status_code == 422  # validated here

        # isolation: resource limits, read-only model directory, minimal environment, cwd
        limits = _limits(pid)
        assert limits["Max address space"] == str(2048 * 1024 * 1024)
        assert limits["Max cpu time"] == "600"
        assert limits["Max open files"] == "64"
        assert limits["Max core file size"] == "0"
        assert "NoNewPrivs:\t1" in Path(f"/proc/{pid}/status").read_text()
        assert stat.S_IMODE(os.stat(model_dir).st_mode) == 0o555
        assert {stat.S_IMODE(p.stat().st_mode) for p in model_dir.iterdir()} == {0o444}
        if os.geteuid() != 0:  # root ignores modes; production runs the server as a non-root user
            with pytest.raises(PermissionError):
                (model_dir / "model.safetensors").open("ab")
        environ = dict(
            item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if item
        )
        assert "PIPELINE_HOME" not in environ and "PYTHONPATH" in environ
        assert len(environ) <= 12
        assert os.readlink(f"/proc/{pid}/cwd") == str(model_dir.parent.absolute())

        metrics = client.get("/metrics").text
        assert _metric(metrics, 'serving_requests_total{endpoint="/predict",status="200"}') == 1
        assert _metric(metrics, 'serving_requests_total{endpoint="/predict",status="422"}') == 1
        assert _metric(metrics, 'serving_request_latency_seconds_count{endpoint="/predict"}') == 2
        assert _metric(metrics, "serving_model_version") == 3
        assert _metric(metrics, "serving_model_load_failures_total") == 0

        # a worker that dies (e.g. killed by its CPU limit) is restarted on the next request
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while app.state.worker.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        again = client.post("/predict", json={"inputs": INPUTS})
        assert again.status_code == 200, again.text
        assert app.state.worker.pid != pid
        assert _metric(client.get("/metrics").text, "serving_model_loads_total") == 2
    assert not app.state.worker.alive()  # lifespan shutdown stopped the worker


def test_a_pool_of_workers_answers_from_isolated_processes_and_replaces_a_dead_one(
    home, tmp_path, release_key, monkeypatch
):
    monkeypatch.setenv("SERVING_WORKERS", "2")
    model_dir = write_model(tmp_path / "models" / "v4", release_key, version=4)
    app = create_app(
        model_dir, [public_key_pem(release_key)], HANDLER, state_file=home / "versions.json", access=ACCESS
    )
    with TestClient(app, headers=AUTH) as client:
        pids = client.get("/healthz").json()["worker_pids"]
        assert len(set(pids)) == 2 and os.getpid() not in pids
        assert all("NoNewPrivs:\t1" in Path(f"/proc/{pid}/status").read_text() for pid in pids)
        expected = torch.tensor(expected_outputs(INPUTS))
        for _ in range(4):
            answer = client.post("/predict", json={"inputs": INPUTS})
            torch.testing.assert_close(torch.tensor(answer.json()["outputs"]), expected)

        os.kill(pids[1], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while app.state.worker.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        answers = [client.post("/predict", json={"inputs": INPUTS}).status_code for _ in range(4)]
        assert answers == [200] * 4  # the dead worker restarted on its next request
        now = client.get("/healthz").json()["worker_pids"]
        assert now[0] == pids[0] and now[1] not in pids
        assert _metric(client.get("/metrics").text, "serving_model_loads_total") == 3
    assert not app.state.worker.alive()


def test_a_refused_model_gives_503_and_a_clear_error(home, tmp_path, release_key):
    attacker = ec.generate_private_key(ec.SECP256R1())
    model_dir = write_model(tmp_path / "models" / "v9", attacker, version=9)
    keys = [public_key_pem(release_key)]
    app = create_app(
        model_dir, keys, HANDLER, state_file=home / "versions.json", access=ACCESS, restart_backoff=300
    )
    with TestClient(app, headers=AUTH) as client:
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["status"] == "unavailable"
        assert "signed by an unknown key" in health.json()["error"]
        predict = client.post("/predict", json={"inputs": INPUTS})
        assert predict.status_code == 503 and "unknown key" in predict.json()["detail"]
        metrics = client.get("/metrics").text
        assert _metric(metrics, "serving_model_load_failures_total") == 1  # back-off: no retry storm
        assert _metric(metrics, "serving_model_version") == -1
        assert _metric(metrics, 'serving_requests_total{endpoint="/healthz",status="503"}') == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_uvicorn_on_loopback(home, tmp_path, release_key, monkeypatch):
    model_dir = write_model(tmp_path / "models" / "v1", release_key, version=1)
    keys = write_trusted_keys(tmp_path / "trusted-keys.json", [public_key_pem(release_key)])
    monkeypatch.setenv("SERVING_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("SERVING_TRUSTED_KEYS", str(keys))
    monkeypatch.setenv("SERVING_HANDLER", HANDLER)
    monkeypatch.setenv("SERVING_STATE_FILE", str(home / "versions.json"))
    monkeypatch.setenv("SERVING_CLIENTS_FILE", str(tmp_path / "clients.json"))
    key = add_client(tmp_path / "clients.json", "ops", ["predict", "admin"])
    port = _free_port()
    config = uvicorn.Config(
        "serving.app:app_from_env", factory=True, host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while not server.started and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.1)
        assert server.started, "uvicorn did not start"
        with httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {key}"}) as http:
            health = http.get("/healthz")
            assert health.status_code == 200 and health.json()["version"] == 1
            answer = http.post("/predict", json={"inputs": INPUTS})
            assert answer.status_code == 200
            torch.testing.assert_close(
                torch.tensor(answer.json()["outputs"]), torch.tensor(expected_outputs(INPUTS))
            )
            metrics = http.get("/metrics")
            assert metrics.headers["content-type"].startswith("text/plain")
            assert _metric(metrics.text, 'serving_requests_total{endpoint="/predict",status="200"}') == 1
            assert http.get("/docs").status_code == 404  # no interactive docs on a model server
        bound = {sock.getsockname()[0] for srv in server.servers for sock in srv.sockets}
        assert bound == {"127.0.0.1"}  # loopback only
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert not thread.is_alive()


def test_worker_speaks_json_lines_and_fails_closed(tmp_path, release_key):
    """The worker CLI on its own: generic protocol, errors as lines, a fatal line on refusal."""
    model_dir = write_model(tmp_path / "models" / "v2", release_key, version=2)
    keys = write_trusted_keys(tmp_path / "keys.json", [public_key_pem(release_key)])
    command = [
        sys.executable, "-P", "-m", "serving.worker", "--model-dir", str(model_dir),
        "--trusted-keys", str(keys), "--architectures", HANDLER,
        "--state-file", str(tmp_path / "state.json"), "--max-memory-mb", "2048",
    ]  # fmt: skip
    requests = [
        {"id": 1, "method": "predict", "params": {"inputs": INPUTS}},
        {"id": 2, "method": "info"},
        {"id": 3, "method": "__init__", "params": {}},
        "not json",
        {"id": 4, "method": "predict", "params": {"inputs": "oops"}},
    ]
    stdin = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in requests) + "\n"
    env = {"PATH": os.defpath, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]  # stdout holds protocol lines only
    assert lines[0]["ready"] and lines[0]["model"]["version"] == 2
    assert lines[0]["limits"]["max_memory_mb"] == 2048
    torch.testing.assert_close(
        torch.tensor(lines[1]["result"]["outputs"]), torch.tensor(expected_outputs(INPUTS))
    )
    assert lines[2] == {"id": 2, "result": lines[0]["model"]}
    assert lines[3]["kind"] == "not_found" and "__init__" in lines[3]["error"]
    assert lines[4]["kind"] == "bad_request" and lines[4]["id"] is None
    assert lines[5]["id"] == 4 and lines[5]["kind"] == "bad_request"

    (model_dir / "config.json").write_text(json.dumps({"architecture": {"name": "x"}, "version": 7}))
    refused = subprocess.run(command, input="", capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode != 0
    (fatal,) = [json.loads(line) for line in refused.stdout.splitlines()]
    assert fatal["fatal"] is True and fatal["stage"] == "signature"
    assert "does not match its signature" in fatal["error"]
