"""Retraining needs a reviewer-signed approval that names the exact dataset."""

import json

import pytest

from resources.keys import LocalKeyProvider
from resources.retraining_approval import RetrainingApprovals, RetrainingNotApproved

DATASET = "blake3:" + "a" * 64


@pytest.fixture
def approvals(home, keys) -> RetrainingApprovals:
    return RetrainingApprovals(key_provider=keys, folder=str(home / "approvals"))


def test_matching_approval_is_accepted(approvals):
    approvals.approve("diagnostic-cnn", DATASET, reviewer="dr.reviewer")
    assert approvals.require("diagnostic-cnn", DATASET)["reviewer"] == "dr.reviewer"


def test_no_approval_is_refused(approvals):
    with pytest.raises(RetrainingNotApproved, match="there is none"):
        approvals.require("diagnostic-cnn", DATASET)


def test_approval_for_another_dataset_is_refused(approvals):
    approvals.approve("diagnostic-cnn", "blake3:" + "b" * 64, reviewer="dr.reviewer")
    with pytest.raises(RetrainingNotApproved, match="not for this dataset"):
        approvals.require("diagnostic-cnn", DATASET)


def test_edited_approval_is_refused(approvals, home):
    approvals.approve("diagnostic-cnn", "blake3:" + "b" * 64, reviewer="dr.reviewer")
    record_file = home / "approvals" / "diagnostic-cnn.json"
    record = json.loads(record_file.read_text())
    record_file.write_text(json.dumps({**record, "dataset_digest": DATASET}))
    with pytest.raises(RetrainingNotApproved, match="not signed by the trusted reviewer"):
        approvals.require("diagnostic-cnn", DATASET)


def test_approval_signed_by_an_untrusted_key_is_refused(approvals, home):
    """Only the trusted reviewer key counts, whatever the record says about its signer."""
    other = RetrainingApprovals(
        key_provider=LocalKeyProvider(folder=str(home / "other-keys")), folder=str(home / "approvals")
    )
    other.approve("diagnostic-cnn", DATASET, reviewer="intruder")
    with pytest.raises(RetrainingNotApproved):
        approvals.require("diagnostic-cnn", DATASET)
