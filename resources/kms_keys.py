"""KMS-backed key provider, chosen by configuration.

`PIPELINE_KMS_KEY_URI=aws-kms://arn:aws:kms:<region>:<account>:key/<id>` selects
`KmsKeyProvider` (`key_provider_from_environment`); without it the pipeline
keeps its keys in the local owner-only folder. The endpoint and credentials
come from the standard AWS environment, read by boto3 itself:
`AWS_ENDPOINT_URL_KMS` or `AWS_ENDPOINT_URL` (a local KMS such as moto's),
`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` or `AWS_PROFILE`. The region is
the key's own, taken from its ARN: a KMS key exists in one region only.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

import boto3
import tink
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError
from pydantic import PrivateAttr
from tink import aead
from tink.integration import awskms

from resources.keys import FolderKeyProvider, KeyProvider, LocalKeyProvider

KMS_KEY_URI_VARIABLE = "PIPELINE_KMS_KEY_URI"
_KEY_URI = re.compile(r"aws-kms://arn:aws:kms:(?P<region>[a-z0-9-]+):\d{12}:(key|alias)/[\w/-]+")
_KEY_FILE_AD = b"secure-ai-pipeline/key-file/"
# Fail within seconds when the endpoint is down: standard retries make 3 attempts unless
# AWS_MAX_ATTEMPTS says otherwise (the legacy default makes 5, with longer waits).
_CLIENT_CONFIG = Config(connect_timeout=5, read_timeout=20, retries={"mode": "standard"})
# KMS answers these when the ciphertext itself is wrong: an integrity failure, not a setting to fix.
_CIPHERTEXT_ERRORS = {"InvalidCiphertextException", "IncorrectKeyException"}
_ADVICE = {
    "NotFoundException": "does not exist there: check the region, account and key id in "
    f"{KMS_KEY_URI_VARIABLE}, and that AWS_ENDPOINT_URL points at the KMS that holds the key",
    "AccessDeniedException": "refused this identity: grant it kms:Encrypt and kms:Decrypt on the key, or "
    "use credentials that have them (KMS also answers this way for material wrapped by another key "
    f"than {KMS_KEY_URI_VARIABLE} names)",
    "UnrecognizedClientException": "does not know these credentials: set AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) for an identity allowed to use the key",
    "DisabledException": "is disabled: enable it (`aws kms enable-key`) or point "
    f"{KMS_KEY_URI_VARIABLE} at an enabled key",
    "KMSInvalidStateException": "is pending deletion or otherwise unusable: cancel the deletion "
    f"(`aws kms cancel-key-deletion`) or point {KMS_KEY_URI_VARIABLE} at a usable key",
}


class KmsKeyError(RuntimeError):
    """The KMS key cannot be used; the message names the setting to fix."""


class _ExplainedAead(aead.Aead):
    """Tink's AWS KMS AEAD, with failures a user can fix reported as such.

    A ciphertext that KMS refuses as altered or foreign stays a `tink.TinkError`
    (callers treat it as tampering); an unreachable endpoint, a missing key or a
    refused identity becomes a `KmsKeyError` that says what to change.
    """

    def __init__(self, inner: aead.Aead, key_uri: str, endpoint: str):
        self._inner, self._key_uri, self._endpoint = inner, key_uri, endpoint

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        with self._explained():
            return self._inner.encrypt(plaintext, associated_data)

    def decrypt(self, ciphertext: bytes, associated_data: bytes) -> bytes:
        with self._explained():
            return self._inner.decrypt(ciphertext, associated_data)

    @contextlib.contextmanager
    def _explained(self) -> Iterator[None]:
        where = f"{KMS_KEY_URI_VARIABLE}={self._key_uri} at {self._endpoint}"
        try:
            yield
        except (BotoConnectionError, HTTPClientError) as error:
            raise KmsKeyError(
                f"Cannot reach the KMS endpoint {self._endpoint} ({error}). Set AWS_ENDPOINT_URL (or "
                f"AWS_ENDPOINT_URL_KMS) to the KMS that holds the key in {KMS_KEY_URI_VARIABLE}, and "
                "check that it is running and reachable from here."
            ) from error
        except NoCredentialsError as error:
            raise KmsKeyError(
                f"No AWS credentials for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE) for an identity allowed to use the key."
            ) from error
        except BotoCoreError as error:
            raise KmsKeyError(f"The KMS request for {where} failed: {error}.") from error
        except tink.TinkError as error:
            # Tink wraps boto3's ClientError as the TinkError's only argument.
            cause = error.args[0] if error.args else None
            if not isinstance(cause, ClientError):
                raise
            code = cause.response.get("Error", {}).get("Code", "")
            if code in _CIPHERTEXT_ERRORS:
                raise
            advice = _ADVICE.get(code, f"refused the request ({cause})")
            raise KmsKeyError(f"The KMS key {where} {advice}. [{code}]") from error


class KmsKeyProvider(FolderKeyProvider):
    """Every key at rest wrapped by one KMS key: the folder alone yields no key.

    Protects against a copy of the key folder, the store or a backup being
    enough to read artifacts or forge the ledger: data keysets are wrapped by
    the KMS key directly (`key_encryption_aead`), and every named secret and
    signing key (ledger MAC key, pseudonym secret, witness and release keys) is
    stored only as KMS ciphertext whose associated data is its file name, so a
    wrapped key renamed to stand in for another does not unwrap. Unwrapping
    needs the KMS, where access is granted, logged and revocable.
    """

    key_uri: str  # aws-kms://arn:aws:kms:<region>:<account>:key/<id>

    _aead: aead.Aead | None = PrivateAttr(default=None)
    # Wrapped bytes -> key: the ledger asks for its MAC key per entry, KMS is asked once per file version.
    _unwrapped: dict[tuple[str, bytes], bytes] = PrivateAttr(default_factory=dict)

    def key_encryption_aead(self) -> aead.Aead:
        if self._aead is None:
            uri = _KEY_URI.fullmatch(self.key_uri)
            if uri is None:
                raise KmsKeyError(
                    f"{KMS_KEY_URI_VARIABLE}={self.key_uri!r} is not an AWS KMS key URI. Write it as "
                    "aws-kms://arn:aws:kms:<region>:<account>:key/<key-id>."
                )
            client = boto3.client("kms", region_name=uri["region"], config=_CLIENT_CONFIG)
            kms = awskms.new_client(boto3_client=client, key_uri=self.key_uri)
            self._aead = _ExplainedAead(kms.get_aead(self.key_uri), self.key_uri, client.meta.endpoint_url)
        return self._aead

    def _seal(self, filename: str, plaintext: bytes) -> bytes:
        return self.key_encryption_aead().encrypt(plaintext, _KEY_FILE_AD + filename.encode())

    def _unseal(self, filename: str, stored: bytes) -> bytes:
        key = self._unwrapped.get((filename, stored))
        if key is None:
            try:
                key = self.key_encryption_aead().decrypt(stored, _KEY_FILE_AD + filename.encode())
            except tink.TinkError as error:
                raise tink.TinkError(
                    f"Key file {self.folder}/{filename} does not unwrap under {KMS_KEY_URI_VARIABLE}="
                    f"{self.key_uri}: it was altered, copied over from another key's file, or wrapped by "
                    "another KMS key (or written by the local key provider). Restore it from a backup "
                    "made with this KMS key; do not delete it while data protected by it is kept."
                ) from error
            self._unwrapped[(filename, stored)] = key
        return key


def key_provider_from_environment(folder: str) -> KeyProvider:
    """`KmsKeyProvider` when `PIPELINE_KMS_KEY_URI` is set, else the local key folder."""
    key_uri = os.environ.get(KMS_KEY_URI_VARIABLE)
    if key_uri:
        return KmsKeyProvider(key_uri=key_uri, folder=folder)
    return LocalKeyProvider(folder=folder)
