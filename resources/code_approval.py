"""A signed manifest of approved transformation code.

Each transformation function is identified by a digest of its source and of
the module that defines it. A reviewer signs the set of approved digests
(`make approve-code`); a processing asset refuses to publish when the code
about to run is not in that signed set. Altering a transformation (or
swapping one in at run time) therefore stops the pipeline instead of
silently biasing its features.
"""

from __future__ import annotations

import base64
import inspect
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from dagster import ConfigurableResource, Failure

from resources.atomic import atomic_write_bytes
from resources.digests import digest_bytes
from resources.keys import KeyProvider
from resources.signed_records import public_key_b64, sign_record, verify_record

APPROVER_KEY = "code-approval"


def code_digest(function: Callable) -> str:
    """Digest of a function's source and of the whole module it lives in.

    The module is included so that a change to a constant or helper the
    function uses changes its digest too.
    """
    module_source = inspect.getsource(inspect.getmodule(function))
    own_source = inspect.getsource(function)
    return digest_bytes(f"{function.__qualname__}\n{own_source}\n{module_source}".encode())


class CodeNotApproved(Failure):
    """The transformation about to run is not in the signed manifest."""


class CodeApprovals(ConfigurableResource):
    """Verifies transformation code against the reviewer-signed manifest.

    `approver_public_key` (base64 raw Ed25519) is the key reviewers sign
    with; left empty, the local key provider's approval key is used (the
    embedded default).
    """

    key_provider: KeyProvider
    manifest_path: str
    approver_public_key: str = ""

    def _manifest_file(self) -> Path:
        return Path(self.manifest_path)

    def _public_key(self) -> Ed25519PublicKey:
        if self.approver_public_key:
            return Ed25519PublicKey.from_public_bytes(base64.b64decode(self.approver_public_key))
        return self.key_provider.signing_key(APPROVER_KEY).public_key()

    def approve(self, functions: dict[str, Callable], approver: str) -> dict:
        """Sign the current code of `functions` as approved (a reviewer's act)."""
        key = self.key_provider.signing_key(APPROVER_KEY)
        manifest = sign_record(
            {
                "approved": {name: code_digest(fn) for name, fn in sorted(functions.items())},
                "approver": approver,
                "approver_key": public_key_b64(key),
                "signed_at": datetime.now(UTC).isoformat(),
            },
            key,
        )
        atomic_write_bytes(self._manifest_file(), json.dumps(manifest, indent=1, sort_keys=True).encode())
        return manifest

    def approved(self) -> dict[str, str]:
        """The approved digests, after verifying the manifest's signature."""
        file = self._manifest_file()
        if not file.exists():
            raise CodeNotApproved(
                f"No approved-code manifest at {file}. A reviewer approves the transformation "
                "code with `make approve-code` before processing may publish."
            )
        try:
            manifest = verify_record(json.loads(file.read_text()), self._public_key())
        except (InvalidSignature, ValueError) as error:
            raise CodeNotApproved(
                f"The approved-code manifest at {file} is not signed by the trusted approver key. "
                "Someone edited it; restore it or re-approve with `make approve-code`."
            ) from error
        return manifest["approved"]

    def require(self, name: str, function: Callable) -> str:
        """Return the function's digest if approved; otherwise refuse to go on."""
        digest = code_digest(function)
        expected = self.approved().get(name)
        if digest != expected:
            raise CodeNotApproved(
                f"Transformation '{name}' is not approved: its code digest is {digest}, the signed "
                f"manifest approves {expected or 'no version of it'}. Refusing to publish its output. "
                "If the change is intended, have it reviewed and re-approve with `make approve-code`; "
                "otherwise restore the approved code.",
                metadata={"code_digest": digest, "approved_digest": expected or ""},
            )
        return digest
