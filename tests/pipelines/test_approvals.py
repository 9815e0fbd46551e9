"""Separate holders for separate powers: the pipeline's identity cannot approve its code or its retraining.

The commands run as a person would run them (`make approve-code`,
`make trust-approvers`), with every location taken from the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from pipelines import approve_code, approve_retraining, operator
from pipelines.environment import resources_for
from resources.code_approval import CodeNotApproved, sign_code_manifest
from resources.keys import KeyProvider
from resources.retraining_approval import RetrainingNotApproved, sign_retraining_approval
from resources.runtime import RuntimeHome
from resources.signed_records import public_key_b64
from resources.trust_store import TrustStore

DATASET = "blake3:" + "c" * 64


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A pipeline home, a trust store, an operator key and two reviewers' key files, apart."""
    monkeypatch.delenv("PIPELINE_KMS_KEY_URI", raising=False)
    for variable, place in {
        "PIPELINE_HOME": "home",
        "PIPELINE_TRUST_STORE": "trust",
        "PIPELINE_OPERATOR_KEY": "operator/operator.key",
        "PIPELINE_CODE_APPROVER_KEY": "alice/code-approval.key",
        "PIPELINE_RETRAINING_APPROVER_KEY": "bob/retraining-approval.key",
    }.items():
        monkeypatch.setenv(variable, str(tmp_path / place))
    return tmp_path


def public_key(module, capsys) -> str:
    """What the reviewer hands the operator: their public key, printed by the approval command."""
    capsys.readouterr()
    assert module.main(["--public-key"]) == 0
    return capsys.readouterr().out.strip()


def pipeline_resources() -> dict:
    return resources_for("healthcare", RuntimeHome.from_environment(), TrustStore.from_environment())


def test_a_reviewer_approves_only_once_the_operator_listed_their_key(deployment, capsys):
    with pytest.raises(SystemExit, match="not listed as a code approver.*trust-approver code"):
        approve_code.main([])
    assert operator.main(["trust-approver", "code", public_key(approve_code, capsys)]) == 0
    assert approve_code.main(["--reviewer", "alice"]) == 0

    approvals = pipeline_resources()["approvals"]
    for name, function in approve_code.approved_transforms().items():
        approvals.require(name, function)
    assert "approved prepare_images" in capsys.readouterr().out


def test_the_pipelines_identity_holds_no_approval_key_and_cannot_approve(deployment, capsys):
    for power, module in (("code", approve_code), ("retraining", approve_retraining)):
        assert operator.main(["trust-approver", power, public_key(module, capsys)]) == 0
    assert approve_code.main([]) == 0
    resources = pipeline_resources()
    held_by_people = [Path(os.environ[f"PIPELINE_{power}_APPROVER_KEY"]) for power in ("CODE", "RETRAINING")]
    reviewer_keys = {public_key_b64(load_pem_private_key(path.read_bytes(), None)) for path in held_by_people}
    # No approval private key anywhere in the pipeline's key folder, whatever it made.
    keys = resources["key_provider"]
    pipeline_keys = [keys.signing_key("code-approval"), keys.signing_key("retraining-reviewer")]
    in_folder = {
        public_key_b64(key)
        for path in Path(keys.folder).glob("*.pem")
        if isinstance(key := load_pem_private_key(path.read_bytes(), None), Ed25519PrivateKey)
    }
    assert in_folder and not in_folder & reviewer_keys
    # The approval resources verify only: they are given no key provider to sign with.
    for approvals in (resources["approvals"], resources["retraining_approvals"]):
        assert not any(isinstance(getattr(approvals, f), KeyProvider) for f in type(approvals).model_fields)

    # Whatever key the pipeline holds or mints, its approvals are refused.
    for key in [*pipeline_keys, Ed25519PrivateKey.generate()]:
        resources["approvals"].record(sign_code_manifest(approve_code.approved_transforms(), "pipeline", key))
        with pytest.raises(CodeNotApproved, match="not signed by a code-approver key the operator trusts"):
            resources["approvals"].require("prepare_images", approve_code.healthcare.prepare_images)
        resources["retraining_approvals"].record(sign_retraining_approval("dx", DATASET, "pipeline", key))
        with pytest.raises(RetrainingNotApproved, match="not signed by a retraining-approver key"):
            resources["retraining_approvals"].require("dx", DATASET)


def test_one_key_cannot_hold_both_powers(deployment, capsys):
    code_key = public_key(approve_code, capsys)
    assert operator.main(["trust-approver", "code", code_key]) == 0
    assert operator.main(["trust-approver", "retraining", code_key]) == 2
    assert "needs a key of its own" in capsys.readouterr().err


def test_a_reviewer_key_readable_by_others_is_refused_with_the_fix(deployment, capsys):
    public_key(approve_retraining, capsys)
    key_file = Path(os.environ["PIPELINE_RETRAINING_APPROVER_KEY"])
    key_file.chmod(0o644)
    with pytest.raises(PermissionError, match=f"readable by other users.*chmod 600 {key_file}"):
        approve_retraining.main([])


def test_the_operator_refuses_what_is_not_a_public_key(deployment):
    with pytest.raises(SystemExit, match="not an Ed25519 public key"):
        operator.main(["trust-approver", "code", "not-a-key"])
