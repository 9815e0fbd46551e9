"""A release replaced under a running server: refused by re-verification, the verified model keeps serving.

The release line is the tiny one of the trust-anchor tests (v1 and v2,
promoted and recorded as promotion does it). The attacks are the attack
lab's own helpers, applied while the server runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
from dagster import AssetKey, AssetSpec, Definitions
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from examples.attacks.lab import read_runs
from examples.attacks.releases import publish_signed_by_unknown_key, roll_back
from examples.attacks.running_server import (
    CHECK_NAME,
    replace_under_running_server,
    running_server_scenario,
    trojan_in_place,
)
from examples.runs import PipelineInstance
from resources.digests import digest_file
from resources.runtime import RuntimeHome
from resources.signing import CONFIG_FILE
from resources.trust_store import ReleaseRecord, TrustStore
from serving.access import AccessPolicy
from serving.app import create_app, create_release_app
from serving.release_watch import fingerprint, reverify_seconds_from_env
from tests.assets.test_trust_anchors import HANDLER, MODEL, Releases, _Instance
from tests.serving import api_key_access, expected_outputs, write_model

INPUTS = [[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]]
# Long enough that only change detection can explain a refusal within it in the change tests.
REVERIFY_SECONDS = 60.0
TIMER_SECONDS = 2.0
VERIFY_ALLOWANCE = 45.0  # starting the verifying worker (imports torch) on a loaded CI machine
ACCESS, HEADERS = api_key_access()


def _metrics(client: TestClient) -> dict[str, float]:
    text = client.get("/metrics").text
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}


def _wait_for(client: TestClient, condition: Callable[[dict], bool], seconds: float) -> tuple[dict, float]:
    """/healthz once `condition` holds, and how long that took; fails after `seconds`."""
    started = time.monotonic()
    while True:
        health = client.get("/healthz").json()
        if condition(health):
            return health, time.monotonic() - started
        if time.monotonic() - started > seconds:
            raise AssertionError(f"/healthz never met the condition within {seconds} s: {health}")
        time.sleep(0.1)


def _answers(client: TestClient) -> dict:
    response = client.post("/predict", json={"inputs": INPUTS})
    assert response.status_code == 200, response.text
    return response.json()


@dataclass
class Running:
    releases: Releases
    client: TestClient

    @property
    def instance(self) -> _Instance:
        return _Instance(self.releases)


def _serve(releases: Releases, reverify_seconds: float) -> Iterator[Running]:
    app = create_release_app(
        MODEL,
        HANDLER,
        title="tiny",
        home=releases.home,
        trust=releases.trust,
        access=ACCESS,
        scope="predict",
        reverify_seconds=reverify_seconds,
    )
    with TestClient(app, headers=HEADERS) as client:
        health = client.get("/healthz").json()
        assert health["status"] == "ok" and health["version"] == 2
        yield Running(releases, client)


@pytest.fixture
def running(tmp_path) -> Iterator[Running]:
    yield from _serve(Releases(tmp_path), REVERIFY_SECONDS)


def _trojan_current(instance: _Instance, model: str) -> None:
    trojan_in_place(instance.defs.resources["releases"].current(model))


@pytest.mark.parametrize(
    ("attack", "reason"),
    [
        (_trojan_current, "signature"),  # v2 overwritten in place, re-signed by an unknown key
        (publish_signed_by_unknown_key, "signature"),  # a v3 signed by an unknown key, current -> v3
        (roll_back, "rollback"),  # current -> v1: validly signed, below the floor
    ],
    ids=["trojan-in-place", "unknown-signer-successor", "rollback"],
)
def test_a_release_replaced_under_the_server_is_refused_and_the_verified_model_keeps_serving(
    running, attack, reason
):
    client = running.client
    before, answers = client.get("/healthz").json(), _answers(client)
    assert np.allclose(answers["outputs"], expected_outputs(INPUTS)) and answers["version"] == 2
    assert _metrics(client)["serving_degraded"] == 0

    attack(running.instance, MODEL)
    health, seconds = _wait_for(client, lambda h: h["status"] != "ok", REVERIFY_SECONDS)

    assert seconds < REVERIFY_SECONDS
    assert health["status"] == "degraded" and reason in health["reason"].lower()
    assert health["refused_release"].startswith(str(running.releases.folder.root / MODEL))
    # Still the model verified at start: same identity, same answers, from the same worker.
    assert {k: health[k] for k in ("version", "digest", "signer", "worker_pid")} == {
        k: before[k] for k in ("version", "digest", "signer", "worker_pid")
    }
    assert _answers(client) == answers
    metrics = _metrics(client)
    assert metrics["serving_release_refusals_total"] >= 1
    assert metrics["serving_degraded"] == 1
    assert metrics["serving_model_loaded"] == 1 and metrics["serving_model_version"] == 2
    assert metrics["serving_release_swaps_total"] == 0


def test_a_validly_signed_successor_is_served_only_after_it_verifies(running):
    client, releases = running.client, running.releases
    _trojan_current(running.instance, MODEL)
    _wait_for(client, lambda h: h["status"] == "degraded", REVERIFY_SECONDS)

    # The operator promotes v3 the way promotion does: signed by the trusted key, then recorded.
    floor = releases.trust.release_floor(MODEL)
    staged = write_model(
        releases.home.root.parent / "staging" / "v3", releases.key, version=3, seed=5,
        extra_config={"predecessor": floor.config_digest},
    )  # fmt: skip
    releases.folder.publish(MODEL, staged, 3)
    releases.trust.record_release(
        ReleaseRecord(MODEL, 3, digest_file(staged / CONFIG_FILE), floor.config_digest)
    )
    health, seconds = _wait_for(client, lambda h: h["version"] == 3, REVERIFY_SECONDS)

    assert seconds < REVERIFY_SECONDS
    assert health["status"] == "ok" and "reason" not in health
    answers = _answers(client)
    assert answers["version"] == 3 and np.allclose(answers["outputs"], expected_outputs(INPUTS, seed=5))
    metrics = _metrics(client)
    assert metrics["serving_release_swaps_total"] == 1
    assert metrics["serving_degraded"] == 0 and metrics["serving_model_version"] == 3


def test_the_timer_re_verifies_a_release_whose_files_did_not_change(tmp_path):
    releases = Releases(tmp_path)
    pointer = releases.folder.root / MODEL / "current.json"
    unchanged = fingerprint(pointer, releases.folder.current(MODEL))
    for running in _serve(releases, TIMER_SECONDS):
        # A v3 promoted elsewhere raises the operator's floor: the served v2 is now a rollback.
        releases.trust.record_release(ReleaseRecord(MODEL, 3, "f" * 64, ""))
        health, seconds = _wait_for(
            running.client, lambda h: h["status"] == "degraded", TIMER_SECONDS + VERIFY_ALLOWANCE
        )
        assert "rollback" in health["reason"] and health["version"] == 2
        assert fingerprint(pointer, releases.folder.current(MODEL)) == unchanged  # only the timer saw it
        assert _answers(running.client)["version"] == 2


class TinyLine(PipelineInstance):
    """The tiny release line as a pipeline instance: its own champion asset and trust store."""

    example: ClassVar[str] = "tiny"
    key: ClassVar[AssetKey] = AssetKey(["tiny", "champion_model"])

    def __init__(self, releases: Releases):
        defs = Definitions(
            assets=[AssetSpec(self.key, group_name="deployment")], resources={"releases": releases.folder}
        )
        super().__init__(releases.home.root, defs=defs, log_level="CRITICAL")
        self.releases = releases

    @property
    def trust(self) -> TrustStore:
        return self.releases.trust


def _release_app(home: RuntimeHome, trust: TrustStore, access: AccessPolicy):
    return create_release_app(
        MODEL, HANDLER, title="tiny", home=home, trust=trust, access=access, scope="predict"
    )


def test_the_lab_scenario_is_detected_by_the_running_server(tmp_path):
    line = TinyLine(Releases(tmp_path))
    scenario = running_server_scenario("tiny", MODEL, TinyLine.key, _release_app, lambda _: None)
    scenario.mount(line)
    outcome = read_runs(line, line.runs, 0.0, scenario)
    assert outcome.detected and outcome.stage == "deployment"
    assert outcome.check == f"champion_model:{CHECK_NAME}"
    assert outcome.errors == []


def test_a_server_that_verifies_only_at_start_up_misses_the_scenario(tmp_path):
    releases = Releases(tmp_path)
    line = TinyLine(releases)

    def verify_once(home: RuntimeHome, trust: TrustStore, access: AccessPolicy):
        """A server as it was before re-verification: it checks its release at start-up only."""
        floor = trust.release_floor(MODEL)
        return create_app(
            releases.folder.current(MODEL), trust.trusted_release_keys(), HANDLER,
            state_file=home.path("serving") / "versions.json", floor=floor.version, access=access,
        )  # fmt: skip

    mount = replace_under_running_server(MODEL, TinyLine.key, verify_once, wait_seconds=3.0)
    scenario = running_server_scenario("tiny", MODEL, TinyLine.key, verify_once, lambda _: None)
    mount(line)
    outcome = read_runs(line, line.runs, 0.0, scenario)
    assert not outcome.detected and outcome.check is None and outcome.errors == []


def test_both_examples_catalogue_the_scenario():
    from examples.ecommerce.attacks import SCENARIOS as ECOMMERCE
    from examples.healthcare.attacks import SCENARIOS as HEALTHCARE

    assert "ecommerce/model-replaced-while-serving" in {s.name for s in ECOMMERCE}
    assert "healthcare/model-replaced-while-serving" in {s.name for s in HEALTHCARE}


def test_the_re_verification_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("SERVING_REVERIFY_SECONDS", raising=False)
    assert reverify_seconds_from_env() == 300.0
    monkeypatch.setenv("SERVING_REVERIFY_SECONDS", "2.5")
    assert reverify_seconds_from_env() == 2.5
    for wrong in ("0", "-1", "nan", "inf", "soon"):
        monkeypatch.setenv("SERVING_REVERIFY_SECONDS", wrong)
        with pytest.raises(ValueError, match="SERVING_REVERIFY_SECONDS"):
            reverify_seconds_from_env()


def test_weights_rewritten_in_place_with_their_mtime_set_back_still_change_the_fingerprint(tmp_path):
    release = tmp_path / "v2"
    release.mkdir()
    weights = release / "model.safetensors"
    weights.write_bytes(b"A" * 64)
    pointer = tmp_path / "current.json"
    pointer.write_text('{"version": 2}')
    before = fingerprint(pointer, release)
    stat = weights.stat()
    time.sleep(0.01)
    with open(weights, "r+b") as handle:  # same inode, same size
        handle.write(b"B" * 64)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_mtime_ns == stat.st_mtime_ns
    assert fingerprint(pointer, release) != before
