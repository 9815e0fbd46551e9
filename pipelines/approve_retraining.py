"""Approve retraining the diagnostic model on the current training set: `make approve-retraining`.

This is the reviewer's act, after looking at the training set the
`healthcare_feedback` job built (its checks, drift report and new studies in
the Dagster UI). It signs, with the retraining reviewer's own key
(`$PIPELINE_RETRAINING_APPROVER_KEY`, default
`.reviewers/retraining-approval.key`; neither the release key nor the
code-approval key), an approval naming the exact digest of that training set;
retraining refuses any other, and any approval signed by a key the operator
has not listed as a retraining approver.

    python -m pipelines.approve_retraining               approve the newest training set
    python -m pipelines.approve_retraining --public-key  print your public key, for the operator to list
"""

import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from assets.healthcare.modeling import TRAINING_SET_KEY
from domain.healthcare.release import MODEL_NAME
from pipelines.approve_code import reviewer_command
from resources.integrity import IntegrityLedger
from resources.retraining_approval import POWER, RetrainingApprovals, sign_retraining_approval


def approve(
    ledger: IntegrityLedger, approvals: RetrainingApprovals, reviewer: str, key: Ed25519PrivateKey
) -> dict:
    """Sign, as `reviewer` with `key`, an approval for the newest healthcare training set in `ledger`."""
    entry = ledger.latest(TRAINING_SET_KEY.to_user_string())
    if entry is None:
        raise SystemExit(
            "There is no healthcare training set to approve yet: run the healthcare_feedback job "
            "(or `make demo`) first."
        )
    record = sign_retraining_approval(MODEL_NAME, entry.digest, reviewer, key)
    approvals.record(record)
    print(f"approved retraining {MODEL_NAME} on {entry.digest} (ledger entry {entry.seq}) by {reviewer}")
    return record


def main(argv: list[str] | None = None) -> int:
    command = reviewer_command(POWER, "healthcare", argv, __doc__.splitlines()[0])
    if command is not None:
        reviewer, key, resources = command
        approve(resources["ledger"], resources["retraining_approvals"], reviewer, key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
