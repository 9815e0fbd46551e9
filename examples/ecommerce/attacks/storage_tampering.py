"""ATTACK SIMULATION — storage tampering: one byte of a stored table changed at rest.

After collection stored the window's activity events, someone with write
access to the store flips one byte of the encrypted table. Processing then
reads it, and the nightly audit re-hashes the store.
"""

from examples.attacks.lab import Scenario
from examples.attacks.storage import flip_a_byte
from examples.ecommerce.attacks.pipeline import COLLECTION, PROCESSING
from examples.ecommerce.shop import Shop


def collected(shop: Shop) -> None:
    assert shop.run_selection(COLLECTION).success, "clean collection failed"


def mount(shop: Shop) -> None:
    flip_a_byte(shop, "ecommerce/activity_events")
    shop.run_selection(PROCESSING)
    shop.run("ecommerce_audit")


SCENARIO = Scenario(
    "ecommerce/storage-tampering",
    "storage tampering",
    "one byte of the stored activity table flipped between collection and processing",
    mount,
    collected,
)
