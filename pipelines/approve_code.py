"""Approve the current transformation code: `make approve-code`.

This is the reviewer's act. It signs the digests of the transformation
functions with the approval key, so that processing publishes only output
made by code someone approved. Run it after reviewing a change to
`assets/*/transforms.py`.
"""

import getpass

from assets.ecommerce.transforms import approved_transforms
from pipelines.deployment import resources_for


def main() -> None:
    approvals = resources_for("ecommerce")["approvals"]
    manifest = approvals.approve(approved_transforms(), approver=getpass.getuser())
    for name, digest in manifest["approved"].items():
        print(f"approved {name}: {digest}")


if __name__ == "__main__":
    main()
