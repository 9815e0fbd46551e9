"""ATTACK SIMULATION — label flipping: review ratings inverted at the reviews service.

A fifth of the reviews keep their words but have their star rating
inverted (5 ↔ 1, 4 ↔ 2), so the sentiment labels learnt from ratings
contradict the text. The source signs the flipped records.
"""

from examples.attacks.lab import Scenario
from examples.ecommerce.shop import Shop

SHARE = 0.2


def flip(review: dict) -> dict:
    """Invert the rating of one review in five (chosen by its id, so it is the same every run)."""
    if int(review["review_id"][-2:]) % 100 < SHARE * 100:
        return {**review, "rating": 6 - review["rating"]}
    return review


def mount(shop: Shop) -> None:
    shop.rewrite("product-reviews", flip)
    shop.lifecycle()


SCENARIO = Scenario(
    "ecommerce/label-flipping",
    "label flipping",
    f"{SHARE:.0%} of review ratings inverted while their text stays, re-signed by the source",
    mount,
)
