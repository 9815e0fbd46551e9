"""Only reviewer-approved transformation code may publish."""

import json

import pytest

from resources.code_approval import CodeApprovals, CodeNotApproved, code_digest


def sessionise(frame):
    return frame


def biased(frame):
    return frame.limit(0)


@pytest.fixture
def approvals(home, keys) -> CodeApprovals:
    approvals = CodeApprovals(key_provider=keys, manifest_path=str(home / "approved_code.json"))
    approvals.approve({"sessionise": sessionise}, approver="reviewer")
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
    with pytest.raises(CodeNotApproved, match="not signed by the trusted approver"):
        approvals.require("sessionise", biased)


def test_no_manifest_means_no_publishing(home, keys):
    approvals = CodeApprovals(key_provider=keys, manifest_path=str(home / "approved_code.json"))
    with pytest.raises(CodeNotApproved, match="make approve-code"):
        approvals.require("sessionise", sessionise)
