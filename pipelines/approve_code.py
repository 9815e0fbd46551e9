"""Approve the current transformation code: `make approve-code`.

This is the reviewer's act. It signs the digests of both examples'
transformation functions with the reviewer's own code-approval key
(`$PIPELINE_CODE_APPROVER_KEY`, default `.reviewers/code-approval.key`, made
on first use), so that processing publishes only output made by code someone
approved. Run it after reviewing a change to `domain/*/transforms.py`.

    python -m pipelines.approve_code               sign the current code
    python -m pipelines.approve_code --public-key  print your public key, for the operator to list

The pipeline holds no approval key: processing accepts the manifest only if
the operator listed your public key as a code approver in the trust store
(`python -m pipelines.operator trust-approver code KEY`).
"""

import argparse
import getpass
import sys
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain.ecommerce import transforms as ecommerce
from domain.healthcare import transforms as healthcare
from pipelines.environment import resources_for
from resources.code_approval import POWER, sign_code_manifest
from resources.keys import APPROVER_KEY_VARIABLES, approver_key_file, held_signing_key
from resources.runtime import RuntimeHome
from resources.signed_records import public_key_b64
from resources.trust_store import TrustStore


def approved_transforms() -> dict[str, Callable[..., object]]:
    """Every transformation the signed manifest covers, by name (names are unique across examples)."""
    functions = ecommerce.approved_transforms()
    clashes = set(functions) & set(healthcare.approved_transforms())
    if clashes:
        raise ValueError(f"transformation names must be unique across examples: {sorted(clashes)}")
    return functions | healthcare.approved_transforms()


def reviewer_key(power: str, trust: TrustStore) -> Ed25519PrivateKey:
    """The reviewer's own key for `power`; refused, saying what to do, unless the operator listed it."""
    file = approver_key_file(power)
    key = held_signing_key(file)
    if public_key_b64(key) not in (public_key_b64(k) for k in trust.trusted_approver_keys(power)):
        raise SystemExit(
            f"Your {power}-approval key ({file}, public key {public_key_b64(key)}) is not listed as a "
            f"{power} approver in the trust store {trust.root}, so the pipeline would refuse what you sign. "
            f"Hand the public key to the operator, who runs `python -m pipelines.operator trust-approver "
            f"{power} {public_key_b64(key)}` (the demo: `make trust-approvers`); then run this again. "
            f"A key elsewhere: set {APPROVER_KEY_VARIABLES[power]}."
        )
    return key


def reviewer_command(
    power: str, example: str, argv: list[str] | None, description: str
) -> tuple[str, Ed25519PrivateKey, dict[str, Any]] | None:
    """Who approves, with which key, over which of `example`'s resources, from an approval command's
    arguments; with `--public-key`, print the reviewer's public key (made on first use) and return None."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--reviewer", default=getpass.getuser(), help="who approves (default: you)")
    parser.add_argument(
        "--public-key", action="store_true", help="print your public key (for the operator) and stop"
    )
    args = parser.parse_args(argv)
    if args.public_key:
        print(public_key_b64(held_signing_key(approver_key_file(power))))
        return None
    trust = TrustStore.from_environment()
    key = reviewer_key(power, trust)
    return args.reviewer, key, resources_for(example, RuntimeHome.from_environment(), trust)


def main(argv: list[str] | None = None) -> int:
    command = reviewer_command(POWER, "ecommerce", argv, __doc__.splitlines()[0])
    if command is not None:
        reviewer, key, resources = command
        manifest = sign_code_manifest(approved_transforms(), reviewer, key)
        resources["approvals"].record(manifest)
        for name, digest in manifest["approved"].items():
            print(f"approved {name}: {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
