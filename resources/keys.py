"""Key provider: where every key the pipeline uses comes from.

`KeyProvider` is the interface; `LocalKeyProvider` is the embedded default,
a keyset folder created on first run with owner-only permissions under the
git-ignored runtime home. `FolderKeyProvider` holds what every folder-backed
provider shares (exclusive creation, the permission check); the KMS-backed
provider in `resources.kms_keys` keeps the same files wrapped by a KMS key.

Keys that grant a person's power are not here: the code-approval key and the
retraining reviewer's key are each held by their reviewer in a file of their
own (`held_signing_key`, `approver_key_file`), outside the pipeline's key
folder, so the pipeline's run-time identity can sign neither. The pipeline
checks approvals against the approver public keys the operator listed in the
trust store (`resources.trust_store`).
"""

from __future__ import annotations

import os
import secrets
import uuid
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

from resources.atomic import atomic_write_bytes, fsync_dir
from resources.runtime import REPO_ROOT

aead.register()

SECRET_BYTES = 32
# Each approval power's key file, set per reviewer; the pipeline's environment never names them.
APPROVER_KEY_VARIABLES = {
    "code": "PIPELINE_CODE_APPROVER_KEY",
    "retraining": "PIPELINE_RETRAINING_APPROVER_KEY",
}


def held_signing_key(path: Path) -> Ed25519PrivateKey:
    """A person's Ed25519 key in their own owner-only file (the operator's, a reviewer's), made on first use.

    Protects against other local users reading it: a file readable by group or
    others is refused with the fix, never used.
    """
    if path.exists():
        if path.stat().st_mode & 0o077:
            raise PermissionError(
                f"Key file {path} is readable by other users, so it no longer proves who signed. "
                f"Restrict it with `chmod 600 {path}` (and its folder with `chmod 700 {path.parent}`) "
                "and run again; if others may have copied it, have the operator replace it."
            )
        key = load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key.")
        return key
    key = Ed25519PrivateKey.generate()
    atomic_write_bytes(path, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()), mode=0o600)
    return key


def approver_key_file(power: str) -> Path:
    """Where the reviewer who holds `power` ("code" or "retraining") keeps their key: the variable in
    `APPROVER_KEY_VARIABLES`, else `.reviewers/<power>-approval.key` in the repository (demo keys,
    one per role)."""
    return Path(
        os.environ.get(APPROVER_KEY_VARIABLES[power]) or REPO_ROOT / ".reviewers" / f"{power}-approval.key"
    )


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
        """A named Ed25519 signing key of the pipeline's own (the ledger's witness key, ...)."""

    @abstractmethod
    def ec_signing_key(self, name: str) -> ec.EllipticCurvePrivateKey:
        """A named EC P-256 signing key (the model release key: OpenSSF model-signing needs EC)."""


class FolderKeyProvider(KeyProvider):
    """Named secrets and signing keys kept as files in an owner-only folder, made on first use.

    Protects against two runs minting different keys for one name (each key file
    is published exclusively, complete or not at all) and against a key file
    other users can read (refused with the fix to apply). Subclasses decide how
    a key is stored at rest through `_seal` / `_unseal`.
    """

    folder: str  # owner-only; key files live here

    def _seal(self, filename: str, plaintext: bytes) -> bytes:
        """The bytes written to `filename` for this key material."""
        return plaintext

    def _unseal(self, filename: str, stored: bytes) -> bytes:
        """The key material back from the bytes read from `filename`."""
        return stored

    def _folder(self) -> Path:
        folder = Path(self.folder)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return folder

    def _create_once(self, path: Path, make: Callable[[], bytes]) -> bytes:
        """Publish a new key file exclusively so racing runs agree on one key.

        The file is written and synced under a temporary name, then hard-linked
        to its real name, which fails if another run got there first: a reader
        never sees a half-written key, and the loser adopts the winner's key.
        """
        plaintext = make()
        sealed = self._seal(path.name, plaintext)
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(sealed)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return self._unseal(path.name, path.read_bytes())
            fsync_dir(path.parent)
        finally:
            tmp.unlink(missing_ok=True)
        return plaintext

    def _read_or_create(self, filename: str, make: Callable[[], bytes]) -> bytes:
        path = self._folder() / filename
        if path.exists():
            if path.stat().st_mode & 0o077:
                raise PermissionError(
                    f"Key file {path} is readable by other users. Restrict it with "
                    f"`chmod 600 {path}` (and the folder with `chmod 700`) and run again."
                )
            return self._unseal(filename, path.read_bytes())
        return self._create_once(path, make)

    def secret(self, name: str) -> bytes:
        return self._read_or_create(f"{name}.secret", lambda: secrets.token_bytes(SECRET_BYTES))

    def import_secret(self, name: str, value: bytes) -> None:
        """Keep an existing secret under `name` (e.g. a pseudonym key moved from another deployment,
        so pseudonyms stay linkable), stored as this provider stores its own; refused if `name`
        already holds another value."""
        if self._read_or_create(f"{name}.secret", lambda: value) != value:
            raise ValueError(f"Secret {name!r} already exists with another value; it was not replaced.")

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


class LocalKeyProvider(FolderKeyProvider):
    """Keys in a local owner-only folder (`.runtime/keys` by default), made on first use.

    Fit for a laptop and for tests. Anyone who can read the folder can read
    every key, so production configures a KMS-backed provider instead
    (`resources.kms_keys.KmsKeyProvider`).
    """

    def key_encryption_aead(self) -> aead.Aead:
        def new_kek() -> bytes:
            handle = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM)
            return tink.json_proto_keyset_format.serialize(handle, secret_key_access.TOKEN).encode()

        serialized = self._read_or_create("kek.json", new_kek).decode()
        handle = tink.json_proto_keyset_format.parse(serialized, secret_key_access.TOKEN)
        return handle.primitive(aead.Aead)
