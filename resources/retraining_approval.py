"""Recorded human approval for retraining a model on an exact dataset.

Some models (the diagnostic CNN) may only be retrained after a reviewer has
looked at the data. The reviewer signs an approval record naming the model
and the exact digest of the training dataset, with their own retraining
reviewer key (`make approve-retraining`), distinct from the release key and
from the code-approval key. The training asset refuses to run without a
valid record for the dataset it is about to learn from.

The pipeline holds no reviewer key: it verifies records against the
retraining-approver public keys the operator listed in the trust store, so
whoever runs the pipeline cannot approve their own retraining.
"""

import json
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dagster import ConfigurableResource, Failure

from resources.atomic import atomic_write_bytes
from resources.signed_records import public_key_b64, read_json_record, sign_record
from resources.trust_store import TrustStore

POWER = "retraining"  # the trust store's list of keys that may approve retraining


class RetrainingNotApproved(Failure):
    """No valid, matching approval record: retraining is refused."""


def sign_retraining_approval(model: str, dataset_digest: str, reviewer: str, key: Ed25519PrivateKey) -> dict:
    """An approval for training `model` on exactly `dataset_digest`, signed with the reviewer's `key`."""
    return sign_record(
        {
            "model": model,
            "dataset_digest": dataset_digest,
            "reviewer": reviewer,
            "reviewer_key": public_key_b64(key),
            "approved_at": datetime.now(UTC).isoformat(),
        },
        key,
    )


class RetrainingApprovals(ConfigurableResource):
    """Reviewer-signed approval records, one per model (the newest approval counts); holds no signing key.

    Protects against retraining on data no person reviewed, and against the
    pipeline approving its own retraining: only a signature by a key the
    operator listed as a retraining approver in the trust store
    (`trust_store`, its folder) counts.
    """

    folder: str
    trust_store: str

    def _file(self, model: str) -> Path:
        return Path(self.folder) / f"{model}.json"

    def record(self, approval: dict) -> None:
        """Keep a signed approval where training reads it (this grants nothing: it is verified at use)."""
        atomic_write_bytes(
            self._file(approval["model"]), json.dumps(approval, indent=1, sort_keys=True).encode()
        )

    def require(self, model: str, dataset_digest: str) -> dict:
        """The approval for this model and dataset, or a refusal that says what to do."""
        file = self._file(model)
        how = (
            "A reviewer approves it with `make approve-retraining` "
            f"(model {model}, dataset {dataset_digest})."
        )
        if not file.exists():
            raise RetrainingNotApproved(
                f"Retraining {model} needs a signed approval and there is none. {how}"
            )
        record = TrustStore(Path(self.trust_store)).approved_by(POWER, read_json_record(file))
        if record is None:
            raise RetrainingNotApproved(
                f"The approval record {file} is not signed by a retraining-approver key the operator "
                f"trusts (`python -m pipelines.operator trust-approver retraining KEY` lists one). {how}"
            )
        if record.get("model") != model or record.get("dataset_digest") != dataset_digest:
            raise RetrainingNotApproved(
                f"The approval on record is for {record.get('model')} on dataset "
                f"{record.get('dataset_digest')}, not for this dataset ({dataset_digest}). {how}",
                metadata={
                    "approved_digest": str(record.get("dataset_digest")),
                    "dataset_digest": dataset_digest,
                },
            )
        return record
