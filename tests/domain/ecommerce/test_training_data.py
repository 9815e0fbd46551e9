"""Training-data checks: label issues (cleanlab) and drift of the training profile."""

import numpy as np
import pandas as pd
import pytest

from domain.ecommerce.training_data import (
    label_issue_share,
    profile_drift,
    training_profile,
)
from examples.ecommerce.world.config import WorldConfig
from examples.ecommerce.world.simulation import build_world


@pytest.fixture(scope="module")
def reviews() -> pd.DataFrame:
    return pd.DataFrame(list(build_world(WorldConfig(seed=7, events=60_000)).reviews()))


def test_flipped_sentiment_labels_raise_the_label_issue_share(reviews):
    clean = label_issue_share(reviews)
    flipped = reviews.copy()
    victims = flipped.sample(frac=0.2, random_state=1).index
    flipped.loc[victims, "rating"] = 6 - flipped.loc[victims, "rating"]
    attacked = label_issue_share(flipped)
    assert attacked["share"] > clean["share"] + 0.05, (clean["share"], attacked["share"])
    assert set(attacked["examples"]) & set(flipped.loc[victims, "review_id"])


def _interactions(n: int, purchases: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user_id": rng.integers(0, n // 5, n).astype(str),
            "item_id": rng.integers(0, 200, n).astype(str),
            "confidence": 1 + rng.exponential(2, n),
            "label": (rng.random(n) < purchases).astype(int),
        }
    )


def test_training_profile_drift_is_small_for_the_same_process_and_large_for_a_shifted_one():
    reference = training_profile(_interactions(20_000, 0.3, seed=1))
    same = training_profile(_interactions(20_000, 0.3, seed=2), reference)
    shifted = _interactions(20_000, 0.3, seed=3)
    shifted["confidence"] *= 4  # bot "purchases" with inflated confidence
    moved = training_profile(shifted, reference)
    assert max(profile_drift(reference, same).values()) < 0.1  # the check fails above 0.25
    assert profile_drift(reference, moved)["confidence"] > 0.25
