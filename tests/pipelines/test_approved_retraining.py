"""The approval sensor: retraining starts once per training set a trusted reviewer approved, and only then."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dagster import (
    AssetCheckEvaluation,
    DagsterInstance,
    RunRequest,
    SkipReason,
    build_sensor_context,
)

from assets.healthcare.modeling import TRAINING_SET_KEY
from domain.healthcare.release import MODEL_NAME
from examples.runs import operator_key_file, trust_folder
from pipelines import healthcare
from pipelines.operator import operator_key
from resources.integrity import LedgerEntry
from resources.retraining_approval import POWER, sign_retraining_approval
from resources.runtime import RuntimeHome
from resources.trust_store import TrustStore


class Location:
    """The healthcare location over a fresh home, with a ledger to record training sets in."""

    def __init__(self, root: Path):
        home = root / "home"
        self.trust = TrustStore(trust_folder(home))
        self.operator = operator_key(operator_key_file(home), self.trust)
        self.defs = healthcare.build_definitions(RuntimeHome(home), self.trust)
        self.sensor = self.defs.resolve_sensor_def("healthcare_approved_retraining")
        self.instance = DagsterInstance.ephemeral()
        self.cursor: str | None = None

    def training_set(self, digest: str) -> str:
        self.defs.resources["ledger"].append(
            LedgerEntry(subject=TRAINING_SET_KEY.to_user_string(), kind="artifact", digest=digest)
        )
        return digest

    def reviewer(self, *, trusted: bool) -> Ed25519PrivateKey:
        key = Ed25519PrivateKey.generate()
        if trusted:
            self.trust.trust_approver_key(POWER, key.public_key(), "tests", self.operator)
        return key

    def approve(self, digest: str, key: Ed25519PrivateKey) -> None:
        approval = sign_retraining_approval(MODEL_NAME, digest, "dr-review", key)
        self.defs.resources["retraining_approvals"].record(approval)

    def tick(self) -> RunRequest | SkipReason:
        with build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            resources=self.defs.resources,
            repository_def=self.defs.get_repository_def(),
        ) as context:
            result = self.sensor(context)
            self.cursor = context.cursor
        return result


@pytest.fixture
def location(tmp_path: Path) -> Location:
    return Location(tmp_path)


def test_retraining_starts_once_per_approved_training_set(location):
    assert "No training set" in location.tick().skip_message

    first = location.training_set("blake3:" + "1" * 64)
    assert "needs a signed approval and there is none" in location.tick().skip_message

    reviewer = location.reviewer(trusted=True)
    location.approve(first, reviewer)
    request = location.tick()
    assert isinstance(request, RunRequest)
    assert request.run_key == first and request.tags["pipeline/approved_by"] == "dr-review"
    assert "already requested" in location.tick().skip_message

    # New feedback built a new training set: the old approval does not carry over.
    second = location.training_set("blake3:" + "2" * 64)
    assert "not for this dataset" in location.tick().skip_message
    location.approve(second, reviewer)
    assert location.tick().run_key == second


def test_an_approval_by_a_key_the_operator_did_not_list_starts_nothing(location):
    digest = location.training_set("blake3:" + "3" * 64)
    location.approve(digest, location.reviewer(trusted=False))
    assert "not signed by a retraining-approver key the operator trusts" in location.tick().skip_message


def test_an_approved_training_set_whose_blocking_check_failed_is_not_retrained(location):
    digest = location.training_set("blake3:" + "4" * 64)
    location.approve(digest, location.reviewer(trusted=True))
    location.instance.report_runless_asset_event(
        AssetCheckEvaluation(
            asset_key=TRAINING_SET_KEY, check_name="untrusted_share_within_cap", passed=False
        )
    )
    skipped = location.tick()
    assert isinstance(skipped, SkipReason)
    assert "healthcare/training_set:untrusted_share_within_cap" in skipped.skip_message

    location.instance.report_runless_asset_event(
        AssetCheckEvaluation(asset_key=TRAINING_SET_KEY, check_name="untrusted_share_within_cap", passed=True)
    )
    assert location.tick().run_key == digest
