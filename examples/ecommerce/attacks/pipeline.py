"""The e-commerce attack lab's pipeline instance and the clean history its attacks start from."""

from __future__ import annotations

from pathlib import Path

from examples.ecommerce.shop import MODEL_EVENTS, Shop

COLLECTION = ["ecommerce/activity_events", "ecommerce/product_reviews"]
PROCESSING = [f"ecommerce/{name}" for name in ("sessions", "interactions", "scored_reviews", "item_features")]


def pipeline(home: Path, scale: int = 1, **options) -> Shop:
    """A fresh shop large enough for every stage's controls, the recommender's included.

    `scale` multiplies the lab's window (`make scorecard SIZE=large` runs 3x).
    """
    return Shop(home, events=scale * MODEL_EVENTS, **options)


def one_release(shop: Shop) -> None:
    """Baseline, then the lifecycle up to a signed v1."""
    assert shop.lifecycle().success, "the clean lifecycle failed"


def two_releases(shop: Shop) -> None:
    """v1, then a week of clean feedback retrained into a signed v2."""
    one_release(shop)
    shop.feedback(cycle=1)
    assert shop.run("ecommerce_retraining").success, "the clean retraining failed"


def clean_lifecycle(shop: Shop) -> None:
    """Everything `make demo` runs: baseline, lifecycle, one retraining cycle, the audits."""
    shop.lifecycle()
    shop.feedback(cycle=1)
    shop.run("ecommerce_retraining")
    shop.run("ecommerce_audit")
