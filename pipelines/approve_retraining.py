"""Approve retraining the diagnostic model on the current training set: `make approve-retraining`.

This is the reviewer's act, after looking at the training set the
`healthcare_feedback` job built (its checks, drift report and new studies in
the Dagster UI). It signs, with the reviewer key (not the release key), an
approval naming the exact digest of that training set; retraining refuses
any other.
"""

import argparse
import getpass

from assets.healthcare.modeling import TRAINING_SET_KEY
from domain.healthcare.release import MODEL_NAME
from pipelines.environment import resources_for
from resources.integrity import IntegrityLedger
from resources.retraining_approval import RetrainingApprovals
from resources.runtime import RuntimeHome
from resources.trust_store import TrustStore


def approve(ledger: IntegrityLedger, approvals: RetrainingApprovals, reviewer: str) -> dict:
    """Sign, as `reviewer`, an approval for the newest healthcare training set in `ledger`."""
    entry = ledger.latest(TRAINING_SET_KEY.to_user_string())
    if entry is None:
        raise SystemExit(
            "There is no healthcare training set to approve yet: run the healthcare_feedback job "
            "(or `make demo`) first."
        )
    record = approvals.approve(MODEL_NAME, entry.digest, reviewer=reviewer)
    print(f"approved retraining {MODEL_NAME} on {entry.digest} (ledger entry {entry.seq}) by {reviewer}")
    return record


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviewer", default=getpass.getuser(), help="who approves (default: you)")
    args = parser.parse_args(argv)
    resources = resources_for("healthcare", RuntimeHome.from_environment(), TrustStore.from_environment())
    return approve(resources["ledger"], resources["retraining_approvals"], args.reviewer)


if __name__ == "__main__":
    main()
