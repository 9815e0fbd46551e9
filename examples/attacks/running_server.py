"""ATTACK SIMULATION: a model replaced under a running server, shared by both examples.

The attacker can write the release folder but not the operator's trust
store. While the example's server runs on the promoted release, they
overwrite that release in place: same folder, same version, trojaned
weights, re-signed with their own key. A server that verified once at
start-up would go on trusting the folder; the example's server re-verifies
it (`serving.release_watch`) in an isolated worker, refuses it, keeps
serving the model it verified and reports itself degraded.

The lab reads its outcomes from Dagster runs, so the server's verdict is
read by an asset check on the example's champion asset, run while the
server is up: it fails (the attack is detected) when the server refused the
replaced release and still answers with the verified model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors.torch
from cryptography.hazmat.primitives.asymmetric import ec
from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    AssetSpec,
    Definitions,
    MetadataValue,
    asset_check,
    define_asset_job,
)
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from examples.attacks.lab import Scenario
from examples.attacks.releases import _writable
from examples.runs import PipelineInstance
from resources.runtime import RuntimeHome
from resources.signing import SIGNATURE_FILE, WEIGHTS_FILE, sign_model
from resources.trust_store import TrustStore
from serving.access import AccessPolicy, ApiKeyClient, ApiKeys, hash_api_key, new_api_key

AppFactory = Callable[[RuntimeHome, TrustStore, AccessPolicy], FastAPI]
CHECK_NAME = "running_server_refuses_replacement"
VERDICT_JOB = "running_server_verdict"
VERDICT_WAIT_SECONDS = 90.0  # change detection polls every second; verifying starts a worker


def trojan_in_place(release: Path, key: ec.EllipticCurvePrivateKey | None = None) -> None:
    """Overwrite `release`'s weights in place with shifted ones, re-signed by the attacker's own key."""
    _writable(release)
    weights = safetensors.torch.load_file(str(release / WEIGHTS_FILE))
    shifted = {name: t + 0.5 if t.is_floating_point() else t for name, t in weights.items()}
    safetensors.torch.save_file(shifted, str(release / WEIGHTS_FILE))
    (release / SIGNATURE_FILE).unlink()
    sign_model(release, key or ec.generate_private_key(ec.SECP256R1()))


def wait_for_verdict(client: TestClient, before: dict[str, Any], seconds: float) -> dict[str, Any]:
    """/healthz once the server reacted to the change (degraded, or another model), or after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        health = client.get("/healthz").json()
        reacted = health.get("status") != "ok" or health.get("digest") != before.get("digest")
        if reacted or time.monotonic() > deadline:
            return health
        time.sleep(0.2)


def operator_access() -> tuple[AccessPolicy, dict[str, str]]:
    """An access policy whose one client is the lab's operator (scope `admin`, for /metrics)."""
    key = new_api_key()
    operator = ApiKeyClient("attack-lab", hash_api_key(key), frozenset({"admin"}))
    return AccessPolicy(api_keys=ApiKeys([operator])), {"Authorization": f"Bearer {key}"}


def release_refusals(client: TestClient) -> float:
    """`serving_release_refusals_total` as /metrics reports it."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "serving_release_refusals_total":
                return sample.value
    raise RuntimeError("the server's /metrics has no serving_release_refusals_total")


def verdict_check(key: AssetKey, client: TestClient, before: dict[str, Any]) -> AssetChecksDefinition:
    """The running server's verdict on the replaced release, as an asset check on the champion."""

    @asset_check(asset=key, name=CHECK_NAME)
    def running_server_refuses_replacement() -> AssetCheckResult:
        """Fails when the running server refused the release replaced under it and kept the verified model.

        Passing means the server took the replaced release for the verified one.
        A server that refused it but stopped answering with the model it had
        verified is an error, not a detection: the attack would have become an outage.
        """
        health = client.get("/healthz").json()
        answered = client.app.state.worker.request("info")  # the serving worker's own memory
        kept = (answered["digest"], answered["version"]) == (before["digest"], before["version"])
        refused = health.get("status") == "degraded"
        if refused and not kept:
            raise RuntimeError(
                f"the server refused the replaced release but serves v{answered['version']} "
                f"({answered['digest'][:12]}), not the v{before['version']} it had verified"
            )
        refusals = release_refusals(client)
        return AssetCheckResult(
            passed=not refused,
            severity=AssetCheckSeverity.ERROR,
            description=(health.get("reason") or "the server serves the replaced release")[:500],
            metadata={
                "status": health.get("status", ""),
                "served_version": answered["version"],
                "served_digest": answered["digest"],
                "served_signer": answered["signer"],
                "verified_digest": before["digest"],
                "release_refusals": refusals,
                "healthz": MetadataValue.json(health),
            },
        )

    return running_server_refuses_replacement


def replace_under_running_server(
    model_name: str, key: AssetKey, app_factory: AppFactory, wait_seconds: float = VERDICT_WAIT_SECONDS
) -> Callable[[PipelineInstance], None]:
    """Start the example's server, trojan its release in place, and read the server's verdict."""

    def mount(instance: PipelineInstance) -> None:
        access, headers = operator_access()
        app = app_factory(RuntimeHome(instance.home), instance.trust, access)
        with TestClient(app, headers=headers) as client:
            before = client.get("/healthz").json()
            if before.get("status") != "ok":
                raise RuntimeError(f"the server did not start on the promoted release: {before}")
            trojan_in_place(instance.defs.resources["releases"].current(model_name))
            wait_for_verdict(client, before, wait_seconds)
            check = verdict_check(key, client, before)
            defs = Definitions(
                assets=[AssetSpec(key, group_name="deployment")],
                asset_checks=[check],
                jobs=[define_asset_job(VERDICT_JOB, selection=AssetSelection.checks(check))],
            )
            instance.run(VERDICT_JOB, defs=defs)

    return mount


def running_server_scenario(
    example: str,
    model_name: str,
    key: AssetKey,
    app_factory: AppFactory,
    one_release: Callable[[PipelineInstance], None],
) -> Scenario:
    """The model-replaced-under-a-running-server scenario against `example`'s own server."""
    return Scenario(
        f"{example}/model-replaced-while-serving",
        "trojan model",
        "the served release's weights overwritten in place while the server runs, re-signed by a key "
        "the servers do not trust",
        replace_under_running_server(model_name, key, app_factory),
        one_release,
    )
