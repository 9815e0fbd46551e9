"""Recorded human approval for retraining a model on an exact dataset.

Some models (the diagnostic CNN) may only be retrained after a reviewer has
looked at the data. The reviewer signs an approval record naming the model
and the exact digest of the training dataset, with a reviewer key that is
distinct from the release key. The training asset refuses to run without a
valid record for the dataset it is about to learn from.
"""

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from dagster import ConfigurableResource, Failure

from resources.atomic import atomic_write_bytes
from resources.keys import KeyProvider
from resources.signed_records import public_key_b64, sign_record, verify_record

REVIEWER_KEY = "retraining-reviewer"


class RetrainingNotApproved(Failure):
    """No valid, matching approval record: retraining is refused."""


class RetrainingApprovals(ConfigurableResource):
    """Reviewer-signed approval records, one per model (the newest approval counts).

    `reviewer_public_key` (base64 raw Ed25519) is the trusted reviewer key;
    left empty, the local key provider's reviewer key is used.
    """

    key_provider: KeyProvider
    folder: str
    reviewer_public_key: str = ""

    def _file(self, model: str) -> Path:
        return Path(self.folder) / f"{model}.json"

    def _public_key(self) -> Ed25519PublicKey:
        if self.reviewer_public_key:
            return Ed25519PublicKey.from_public_bytes(base64.b64decode(self.reviewer_public_key))
        return self.key_provider.signing_key(REVIEWER_KEY).public_key()

    def approve(self, model: str, dataset_digest: str, reviewer: str) -> dict:
        """Sign an approval for training `model` on exactly `dataset_digest` (the reviewer's act)."""
        key = self.key_provider.signing_key(REVIEWER_KEY)
        record = sign_record(
            {
                "model": model,
                "dataset_digest": dataset_digest,
                "reviewer": reviewer,
                "reviewer_key": public_key_b64(key),
                "approved_at": datetime.now(UTC).isoformat(),
            },
            key,
        )
        atomic_write_bytes(self._file(model), json.dumps(record, indent=1, sort_keys=True).encode())
        return record

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
        try:
            record = verify_record(json.loads(file.read_text()), self._public_key())
        except (InvalidSignature, ValueError) as error:
            raise RetrainingNotApproved(
                f"The approval record {file} is not signed by the trusted reviewer key. {how}"
            ) from error
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
