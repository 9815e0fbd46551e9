"""A trust store with an operator, and reviewers the operator listed: what approval tests start from."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from resources.keys import held_signing_key
from resources.trust_store import TrustStore


class Approvers:
    """The operator's trust store under `root`, and each power's reviewer key, listed by the operator."""

    def __init__(self, root: Path):
        self.trust = TrustStore(root / "trust")
        self.operator = held_signing_key(root / "operator.key")
        self.trust.set_operator_key(self.operator.public_key())
        self.reviewers = {
            power: self.listed(power, held_signing_key(root / "reviewers" / f"{power}.key"))
            for power in ("code", "retraining")
        }

    def listed(self, power: str, key: Ed25519PrivateKey) -> Ed25519PrivateKey:
        self.trust.trust_approver_key(power, key.public_key(), "ops", self.operator)
        return key
