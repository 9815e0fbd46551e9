"""ATTACK SIMULATION — processing manipulation: the feature code altered to favour one item.

The attacker edits `build_interactions` so that every interaction with one
item counts as a purchase, then lets the scheduled lifecycle run it.
"""

from unittest import mock

from domain.ecommerce import transforms
from examples.attacks.lab import Scenario
from examples.ecommerce.shop import Shop

FAVOURED_ITEM = "i000001"
approved_build_interactions = transforms.build_interactions


def biased_build_interactions(sessions):
    """The attacker's copy: every interaction with one item counts as a purchase."""
    from pyspark.sql import functions as F

    return approved_build_interactions(sessions).withColumn(
        "label", F.when(F.col("item_id") == FAVOURED_ITEM, 1).otherwise(F.col("label"))
    )


def mount(shop: Shop) -> None:
    with mock.patch.object(transforms, "build_interactions", biased_build_interactions):
        shop.lifecycle()


SCENARIO = Scenario(
    "ecommerce/processing-manipulation",
    "processing manipulation",
    f"`build_interactions` edited to count every interaction with {FAVOURED_ITEM} as a purchase",
    mount,
)
