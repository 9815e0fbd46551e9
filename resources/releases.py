"""The release signer: the Dagster resource that holds the release key (only promotion is given it)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from dagster import ConfigurableResource

from resources.keys import KeyProvider
from resources.signing import key_fingerprint, public_key_pem, sign_model


class ReleaseSigner(ConfigurableResource):
    """Holds the release key; only the promotion step is given this resource.

    Serving never sees it: servers get `public_key_pem()` in their trusted-key list.
    """

    key_provider: KeyProvider
    key_name: str = "release"

    def _key(self) -> ec.EllipticCurvePrivateKey:
        return self.key_provider.ec_signing_key(self.key_name)

    def sign(self, model_dir: Path) -> Path:
        return sign_model(Path(model_dir), self._key())

    def public_key_pem(self) -> bytes:
        return public_key_pem(self._key())

    def fingerprint(self) -> str:
        return key_fingerprint(self._key())
