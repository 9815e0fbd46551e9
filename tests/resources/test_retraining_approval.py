"""Retraining needs an approval that names the exact dataset, signed by a reviewer the operator listed."""

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from resources.retraining_approval import RetrainingApprovals, RetrainingNotApproved, sign_retraining_approval
from tests.resources.approvers import Approvers

DATASET = "blake3:" + "a" * 64
OTHER = "blake3:" + "b" * 64


@pytest.fixture
def approvers(tmp_path) -> Approvers:
    return Approvers(tmp_path)


@pytest.fixture
def approvals(home, approvers) -> RetrainingApprovals:
    return RetrainingApprovals(folder=str(home / "approvals"), trust_store=str(approvers.trust.root))


def approve(approvals: RetrainingApprovals, key: Ed25519PrivateKey, dataset: str = DATASET) -> None:
    approvals.record(sign_retraining_approval("diagnostic-cnn", dataset, "dr.reviewer", key))


def test_matching_approval_is_accepted(approvals, approvers):
    approve(approvals, approvers.reviewers["retraining"])
    assert approvals.require("diagnostic-cnn", DATASET)["reviewer"] == "dr.reviewer"


def test_no_approval_is_refused(approvals):
    with pytest.raises(RetrainingNotApproved, match="there is none"):
        approvals.require("diagnostic-cnn", DATASET)


def test_approval_for_another_dataset_is_refused(approvals, approvers):
    approve(approvals, approvers.reviewers["retraining"], OTHER)
    with pytest.raises(RetrainingNotApproved, match="not for this dataset"):
        approvals.require("diagnostic-cnn", DATASET)


def test_edited_approval_is_refused(approvals, approvers, home):
    approve(approvals, approvers.reviewers["retraining"], OTHER)
    record_file = home / "approvals" / "diagnostic-cnn.json"
    record = json.loads(record_file.read_text())
    record_file.write_text(json.dumps({**record, "dataset_digest": DATASET}))
    with pytest.raises(RetrainingNotApproved, match="not signed by a retraining-approver key"):
        approvals.require("diagnostic-cnn", DATASET)


def test_approval_signed_by_a_key_the_pipeline_holds_is_refused(approvals, keys):
    """Only a key the operator listed counts, whatever the record says about its signer."""
    for key in (keys.signing_key("retraining-reviewer"), Ed25519PrivateKey.generate()):
        approve(approvals, key)
        with pytest.raises(RetrainingNotApproved, match="not signed by a retraining-approver key"):
            approvals.require("diagnostic-cnn", DATASET)


def test_the_code_reviewer_cannot_approve_retraining(approvals, approvers):
    approve(approvals, approvers.reviewers["code"])
    with pytest.raises(RetrainingNotApproved, match="not signed by a retraining-approver key"):
        approvals.require("diagnostic-cnn", DATASET)
