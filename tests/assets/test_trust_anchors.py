"""Attacks on the trust anchors, in the attacker's own terms.

The attacker can write the release folder, the ledger and the Dagster home,
but not the operator's trust store. Releases here are tiny signed models
published and recorded the way promotion does it, so the release check and
a fresh server can be tried against each attack in seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from dagster import AssetKey, build_asset_check_context
from fastapi.testclient import TestClient

from assets.promotion import release_check
from examples.attacks.anchors import TRUST_FILE_NAMES, capture_inbox, truncate_and_replay
from examples.attacks.releases import publish_signed_by_unknown_key
from examples.ecommerce.attacks.pipeline import COLLECTION
from examples.ecommerce.shop import Shop
from examples.runs import checks
from pipelines.operator import operator_key
from resources.digests import digest_file
from resources.release_folder import ReleaseFolder
from resources.runtime import RuntimeHome
from resources.signing import CONFIG_FILE, public_key_pem
from resources.trust_store import ReleaseRecord, TrustStore
from serving.app import create_release_app
from tests.serving import ARCHITECTURES, api_key_access, write_model

MODEL = "tiny-line"
CHECK = release_check(AssetKey(["tiny", "champion_model"]), MODEL, ARCHITECTURES)
HANDLER = "tests.serving:TinyHandler"


class Releases:
    """A release line promoted twice, as `assets.promotion.promote` does it, and the operator's store."""

    def __init__(self, root: Path):
        self.home, self.trust = RuntimeHome(root / "home"), TrustStore(root / "trust")
        self.folder = ReleaseFolder(self.home.path("releases"))
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.operator = operator_key(root / "operator.key", self.trust)
        self.trust.trust_release_key(public_key_pem(self.key), operator="ops")
        for version in (1, 2):
            floor = self.trust.release_floor(MODEL)
            predecessor = floor.config_digest if floor else ""
            staged = write_model(
                root / "staging" / f"v{version}", self.key, version=version,
                extra_config={"predecessor": predecessor},
            )  # fmt: skip
            self.folder.publish(MODEL, staged, version)
            config = digest_file(staged / CONFIG_FILE)
            self.trust.record_release(ReleaseRecord(MODEL, version, config, predecessor))

    def check(self):
        return CHECK(build_asset_check_context(), self.folder, self.trust)

    def fresh_server_health(self) -> tuple[int, dict]:
        """/healthz of a server started with no local state of its own (a new host, a wiped disk)."""
        shutil.rmtree(self.home.root / "serving", ignore_errors=True)
        access, auth = api_key_access()
        app = create_release_app(
            MODEL, HANDLER, title="tiny", home=self.home, trust=self.trust, access=access, scope="predict"
        )
        with TestClient(app, headers=auth) as client:
            response = client.get("/healthz")
            return response.status_code, response.json()

    def acknowledge_all(self, note: str) -> int:
        alarms = self.trust.open_alarms()
        for alarm in alarms:
            self.trust.acknowledge(alarm.alarm_id, "ops", self.operator, note)
        return len(alarms)


@pytest.fixture
def releases(tmp_path) -> Releases:
    return Releases(tmp_path)


class _Instance:
    """What the shared attack helpers need of a pipeline instance."""

    def __init__(self, releases: Releases):
        self.defs = type("Defs", (), {"resources": {"releases": releases.folder}})()
        self.home = releases.home.root


def test_the_promoted_line_passes_and_serves(releases):
    assert releases.check().passed
    status, health = releases.fresh_server_health()
    assert status == 200 and health["version"] == 2


def test_a_key_appended_to_any_file_the_pipeline_holds_is_not_trusted(releases):
    attacker = ec.generate_private_key(ec.SECP256R1())
    pem = public_key_pem(attacker).decode()
    folders = (
        releases.folder.root,
        releases.folder.root / MODEL,
        releases.home.root,
        releases.home.path("config"),
    )
    for folder in folders:
        for name in TRUST_FILE_NAMES:
            (folder / name).write_text(json.dumps({"trusted_release_keys": [pem]}))
    publish_signed_by_unknown_key(_Instance(releases), MODEL, attacker)
    result = releases.check()
    assert not result.passed and "signature" in result.description
    status, health = releases.fresh_server_health()
    assert status == 503 and health["status"] == "unavailable"
    assert releases.trust.release_floor(MODEL).version == 2  # the attacker's v3 moved no floor


def test_the_newest_release_deleted_and_current_repointed_is_a_rollback(releases):
    (releases.folder.root / MODEL / "v2").chmod(0o755)
    shutil.rmtree(releases.folder.root / MODEL / "v2")
    (releases.folder.root / MODEL / "current.json").write_text(json.dumps({"version": 1}))
    assert releases.folder.versions(MODEL) == [1]  # the folder's newest *is* the old one now
    result = releases.check()
    assert not result.passed and "rollback" in result.description and "version 2" in result.description
    status, health = releases.fresh_server_health()
    assert status == 503 and "rollback" in health["error"]


def test_a_renamed_newest_release_is_refused(releases):
    (releases.folder.root / MODEL / "v2").rename(releases.folder.root / MODEL / "v7")
    (releases.folder.root / MODEL / "current.json").write_text(json.dumps({"version": 7}))
    assert not releases.check().passed


def test_a_refused_release_stays_refused_until_the_operator_acknowledges(releases):
    pointer = releases.folder.root / MODEL / "current.json"
    pointer.write_text(json.dumps({"version": 1}))
    assert not releases.check().passed
    pointer.write_text(json.dumps({"version": 2}))
    assert not releases.check().passed  # put back, but the alarm is still raised
    assert releases.acknowledge_all("pointer restored to v2; v1 re-pointing traced to a deploy script") == 1
    assert releases.check().passed


@pytest.mark.slow
def test_a_deleted_ledger_tail_stays_detected_until_acknowledged_and_replays_are_refused(tmp_path):
    shop = Shop(tmp_path / "home")
    capture_inbox(shop)
    assert shop.run_selection(COLLECTION).success
    assert shop.run("ecommerce_audit").success

    truncate_and_replay(COLLECTION)(shop)  # delete the collection run's entries, land its batches again
    replayed, audit = shop.runs[-2], shop.runs[-1]
    assert checks(replayed)["activity_events:batches_authenticated"] is False
    reasons = replayed.output_for_node("ecommerce__activity_events")
    assert reasons.rows == 0  # every re-landed batch was refused: nothing was collected twice
    assert checks(audit)["integrity_audit:ledger_chain_intact"] is False
    assert checks(shop.run("ecommerce_audit"))["integrity_audit:ledger_chain_intact"] is False  # still

    assert shop.acknowledge_alarms("tail lost with the attacked host; replayed batches refused") >= 1
    assert checks(shop.run("ecommerce_audit"))["integrity_audit:ledger_chain_intact"] is True
