"""Rotate the pipeline's keys: `make rotate-keys`.

A new primary data key in the artifact store's keyset and a new ledger MAC
key. Nothing is re-encrypted or re-sealed: artifacts written before keep
decrypting with the data key that wrote them (it stays in the keyset), and
ledger entries keep verifying with the MAC key version each one records.
The pseudonym secret is not rotated: pseudonyms must stay stable to link
records across batches.

Run it while no other rotation runs. It refuses to rotate over a ledger
whose chain does not verify: sealing a damaged history under a new key
would hide when the damage happened.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from pipelines.environment import resources_for
from resources.digests import IntegrityError
from resources.integrity import IntegrityLedger, mac_key_name
from resources.runtime import RuntimeHome
from resources.store import ArtifactStore
from resources.trust_store import TrustStore


class RotationRefused(RuntimeError):
    """The ledger's chain does not verify, so no key is rotated."""


@dataclass(frozen=True)
class Rotation:
    data_key_id: int
    mac_key: str
    rotation_seq: int
    entries: int


def rotate_keys(store: ArtifactStore, ledger: IntegrityLedger) -> Rotation:
    """Rotate the data key and the ledger MAC key, then check the chain verifies across the rotation."""
    before = ledger.verify_chain()
    if not before.ok:
        raise RotationRefused(
            "The ledger's chain does not verify, so no key was rotated: "
            + "; ".join(before.problems[:5])
            + ". Investigate with the integrity audit, resolve its alarm, then rotate."
        )
    data_key_id = store.rotate_data_key()
    rotation = ledger.rotate_mac_key()
    after = ledger.verify_chain()
    if not after.ok:
        raise IntegrityError(
            "The keys were rotated but the chain does not verify: "
            + "; ".join(after.problems[:5])
            + ". Run the integrity audit: the ledger changed while it was rotated."
        )
    return Rotation(data_key_id, mac_key_name(rotation.mac_key_version), rotation.seq, after.entries)


def main() -> int:
    resources = resources_for("ecommerce", RuntimeHome.from_environment(), TrustStore.from_environment())
    try:
        rotation = rotate_keys(resources["store"], resources["ledger"])
    except (RotationRefused, IntegrityError) as error:
        print(error, file=sys.stderr)
        return 1
    print(f"data key: new primary key {rotation.data_key_id}; older keys kept to decrypt what they wrote")
    print(f"ledger MAC key: {rotation.mac_key} from entry #{rotation.rotation_seq}")
    print(f"ledger chain verifies across the rotation ({rotation.entries} entries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
