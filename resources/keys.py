"""Key provider: where every key the pipeline uses comes from.

`KeyProvider` is the interface; `LocalKeyProvider` is the embedded default,
a keyset folder created on first run with owner-only permissions under the
git-ignored runtime home. A production deployment implements the same three
methods against a KMS or Vault (Tink ships KMS clients for AWS and GCP whose
`Aead` can be returned by `key_encryption_aead` unchanged).
"""

from __future__ import annotations

import os
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import tink
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from dagster import ConfigurableResource
from tink import aead, secret_key_access

aead.register()

SECRET_BYTES = 32


class KeyProvider(ConfigurableResource, ABC):
    """Supplies keys by name; never hands out a key-encryption key's bytes."""

    @abstractmethod
    def key_encryption_aead(self) -> aead.Aead:
        """The key-encryption key (KEK) that wraps data keysets (envelope encryption)."""

    @abstractmethod
    def secret(self, name: str) -> bytes:
        """A named 32-byte symmetric secret (ledger MAC key, pseudonym key, ...)."""

    @abstractmethod
    def signing_key(self, name: str) -> Ed25519PrivateKey:
        """A named Ed25519 signing key (code-approval key, reviewer key, ...)."""

    @abstractmethod
    def ec_signing_key(self, name: str) -> ec.EllipticCurvePrivateKey:
        """A named EC P-256 signing key (the model release key: OpenSSF model-signing needs EC)."""


class LocalKeyProvider(KeyProvider):
    """Keys in a local owner-only folder (`.runtime/keys` by default), made on first use.

    Fit for a laptop and for tests. Anyone who can read the folder can read
    every key, so production configures a KMS-backed provider instead.
    """

    folder: str  # owner-only; keysets and secrets live here

    def _folder(self) -> Path:
        folder = Path(self.folder)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return folder

    def _create_once(self, path: Path, make: Callable[[], bytes]) -> bytes:
        """Write a new key file exclusively (O_EXCL) so racing runs agree on one key."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes()
        data = make()
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return data

    def _read_or_create(self, filename: str, make: Callable[[], bytes]) -> bytes:
        path = self._folder() / filename
        if path.exists():
            if path.stat().st_mode & 0o077:
                raise PermissionError(
                    f"Key file {path} is readable by other users. Restrict it with "
                    f"`chmod 600 {path}` (and the folder with `chmod 700`) and run again."
                )
            data = path.read_bytes()
            if data:
                return data
        return self._create_once(path, make)

    def key_encryption_aead(self) -> aead.Aead:
        def new_kek() -> bytes:
            handle = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM)
            return tink.json_proto_keyset_format.serialize(handle, secret_key_access.TOKEN).encode()

        serialized = self._read_or_create("kek.json", new_kek).decode()
        handle = tink.json_proto_keyset_format.parse(serialized, secret_key_access.TOKEN)
        return handle.primitive(aead.Aead)

    def secret(self, name: str) -> bytes:
        return self._read_or_create(f"{name}.secret", lambda: secrets.token_bytes(SECRET_BYTES))

    def signing_key(self, name: str) -> Ed25519PrivateKey:
        def new_key() -> bytes:
            return Ed25519PrivateKey.generate().private_bytes(
                Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
            )

        key = load_pem_private_key(self._read_or_create(f"{name}.pem", new_key), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise TypeError(f"Key '{name}' is not an Ed25519 private key.")
        return key

    def ec_signing_key(self, name: str) -> ec.EllipticCurvePrivateKey:
        def new_key() -> bytes:
            return ec.generate_private_key(ec.SECP256R1()).private_bytes(
                Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
            )

        key = load_pem_private_key(self._read_or_create(f"{name}.ec.pem", new_key), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise TypeError(f"Key '{name}' is not an EC P-256 private key.")
        return key
