"""Approve the current transformation code: `make approve-code`.

This is the reviewer's act. It signs the digests of both examples'
transformation functions with the approval key, so that processing
publishes only output made by code someone approved. Run it after reviewing
a change to `domain/*/transforms.py`.
"""

import getpass
from collections.abc import Callable

from domain.ecommerce import transforms as ecommerce
from domain.healthcare import transforms as healthcare
from pipelines.environment import resources_for
from resources.runtime import RuntimeHome
from resources.trust_store import TrustStore


def approved_transforms() -> dict[str, Callable[..., object]]:
    """Every transformation the signed manifest covers, by name (names are unique across examples)."""
    functions = ecommerce.approved_transforms()
    clashes = set(functions) & set(healthcare.approved_transforms())
    if clashes:
        raise ValueError(f"transformation names must be unique across examples: {sorted(clashes)}")
    return functions | healthcare.approved_transforms()


def main() -> None:
    resources = resources_for("ecommerce", RuntimeHome.from_environment(), TrustStore.from_environment())
    approvals = resources["approvals"]
    manifest = approvals.approve(approved_transforms(), approver=getpass.getuser())
    for name, digest in manifest["approved"].items():
        print(f"approved {name}: {digest}")


if __name__ == "__main__":
    main()
