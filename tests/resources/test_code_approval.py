"""Only transformation code approved by a reviewer the operator listed may publish."""

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from resources.code_approval import CodeApprovals, CodeNotApproved, code_digest, sign_code_manifest
from tests.resources.approvers import Approvers


def sessionise(frame):
    return frame


def biased(frame):
    return frame.limit(0)


@pytest.fixture
def approvers(tmp_path) -> Approvers:
    return Approvers(tmp_path)


def code_approvals(home, approvers: Approvers) -> CodeApprovals:
    trust = str(approvers.trust.root)
    return CodeApprovals(manifest_path=str(home / "approved_code.json"), trust_store=trust)


@pytest.fixture
def approvals(home, approvers) -> CodeApprovals:
    approvals = code_approvals(home, approvers)
    approvals.record(sign_code_manifest({"sessionise": sessionise}, "reviewer", approvers.reviewers["code"]))
    return approvals


def test_approved_code_passes(approvals):
    assert approvals.require("sessionise", sessionise) == code_digest(sessionise)


def test_swapped_in_code_is_refused(approvals):
    with pytest.raises(CodeNotApproved, match="not approved"):
        approvals.require("sessionise", biased)


def test_a_manifest_edited_to_approve_other_code_is_refused(approvals, home):
    manifest = home / "approved_code.json"
    data = json.loads(manifest.read_text())
    data["approved"]["sessionise"] = code_digest(biased)
    manifest.write_text(json.dumps(data))
    with pytest.raises(CodeNotApproved, match="not signed by a code-approver key the operator trusts"):
        approvals.require("sessionise", biased)


def test_a_manifest_that_is_not_json_is_refused_not_crashed_on(approvals, home):
    (home / "approved_code.json").write_text("not json")
    with pytest.raises(CodeNotApproved, match="not signed by a code-approver key"):
        approvals.require("sessionise", sessionise)


def test_no_manifest_means_no_publishing(home, approvers):
    with pytest.raises(CodeNotApproved, match="make approve-code"):
        code_approvals(home, approvers).require("sessionise", sessionise)


def test_a_key_the_operator_never_listed_cannot_approve(approvals, keys):
    """Keys the pipeline holds (its key provider) or mints itself are not approvers."""
    for key in (
        keys.signing_key("code-approval"),
        keys.signing_key("ledger-witness"),
        Ed25519PrivateKey.generate(),
    ):
        approvals.record(sign_code_manifest({"sessionise": biased}, "insider", key))
        with pytest.raises(CodeNotApproved, match="not signed by a code-approver key"):
            approvals.require("sessionise", biased)


def test_the_retraining_reviewer_cannot_approve_code(approvals, approvers):
    approvals.record(
        sign_code_manifest({"sessionise": biased}, "dr.reviewer", approvers.reviewers["retraining"])
    )
    with pytest.raises(CodeNotApproved, match="not signed by a code-approver key"):
        approvals.require("sessionise", biased)
