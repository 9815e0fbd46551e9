"""A signed manifest of approved transformation code.

Each transformation function is identified by a digest of its source and of
the module that defines it. A reviewer signs the set of approved digests
with their own code-approval key (`make approve-code`); a processing asset
refuses to publish when the code about to run is not in that signed set.
Altering a transformation (or swapping one in at run time) therefore stops
the pipeline instead of silently biasing its features.

The pipeline holds no approval key: it verifies the manifest against the
code-approver public keys the operator listed in the trust store. Whoever
runs the pipeline, with every key it holds or can mint, cannot approve
their own code.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dagster import ConfigurableResource, Failure

from resources.atomic import atomic_write_bytes
from resources.digests import digest_bytes
from resources.signed_records import public_key_b64, read_json_record, sign_record
from resources.trust_store import TrustStore

POWER = "code"  # the trust store's list of keys that may approve code


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


def sign_code_manifest(functions: dict[str, Callable], approver: str, key: Ed25519PrivateKey) -> dict:
    """A manifest approving the current code of `functions`, signed with the reviewer's `key` (their act)."""
    return sign_record(
        {
            "approved": {name: code_digest(fn) for name, fn in sorted(functions.items())},
            "approver": approver,
            "approver_key": public_key_b64(key),
            "signed_at": datetime.now(UTC).isoformat(),
        },
        key,
    )


class CodeApprovals(ConfigurableResource):
    """Verifies transformation code against a reviewer-signed manifest; holds no key that could sign one.

    Protects against code changed without review, and against approving one's
    own change with the pipeline's credentials: only a signature by a key
    the operator listed as a code approver in the trust store (`trust_store`,
    its folder) counts.
    """

    manifest_path: str
    trust_store: str

    def _manifest_file(self) -> Path:
        return Path(self.manifest_path)

    def record(self, manifest: dict) -> None:
        """Keep a signed manifest where processing reads it (this grants nothing: it is verified at use)."""
        atomic_write_bytes(self._manifest_file(), json.dumps(manifest, indent=1, sort_keys=True).encode())

    def approved(self) -> dict[str, str]:
        """The approved digests, after verifying the manifest's signature."""
        file = self._manifest_file()
        if not file.exists():
            raise CodeNotApproved(
                f"No approved-code manifest at {file}. A reviewer approves the transformation "
                "code with `make approve-code` before processing may publish."
            )
        manifest = read_json_record(file)
        verified = TrustStore(Path(self.trust_store)).approved_by(POWER, manifest)
        if verified is not None:
            return verified["approved"]
        raise CodeNotApproved(
            f"The approved-code manifest at {file} is not signed by a code-approver key the operator "
            f"trusts (it names key {manifest.get('approver_key', '?')}). Someone edited it or signed it "
            "with a key of their own; restore it, or have a reviewer whose key the operator listed "
            "(`python -m pipelines.operator trust-approver code KEY`) re-approve with `make approve-code`."
        )

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
