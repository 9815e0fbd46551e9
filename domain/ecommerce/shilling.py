"""Shilling sensitivity of the e-commerce recommender: how far fake accounts push an item.

`shilling_sensitivity` measures how far a coordinated group of fake accounts
(a bandwagon attack, `inject_shilling`) can push an unpopular item
(`pick_shilling_target`) into real users' top-k (OWASP LLM04 Data and Model
Poisoning, AML.T0020 Poison Training Data), the robustness figure the
modeling checks hold to a limit.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from domain.ecommerce.ranking_metrics import target_exposure
from domain.ecommerce.recommender import IdIndex, TrainConfig, train_bpr

FAKE_USER_PREFIX = "shill"


def pick_shilling_target(train: pd.DataFrame) -> str:
    """The least popular item with at least one interaction (fewest users, then smallest id).

    An unpopular item is what a shilling attacker promotes: it has the most
    to gain, and a clean model has no reason to recommend it.
    """
    counts = train.groupby("item_id").size()
    return str(counts.sort_index().sort_values(kind="stable").index[0])


def inject_shilling(
    train: pd.DataFrame,
    index: IdIndex,
    *,
    target_item: str,
    fake_users: int,
    filler_items: int,
    seed: int,
) -> tuple[pd.DataFrame, IdIndex]:
    """Add `fake_users` fake accounts running a bandwagon attack on `target_item`.

    Each fake account buys the target (with the highest confidence seen in
    `train`) and views `filler_items` other items drawn by popularity, so its
    profile resembles a real user's and ties the target to popular taste.
    Returns the poisoned table and its index; fake ids sort before the real ones.
    """
    index.item_positions([target_item])  # KeyError for a target the index does not know
    fake_ids = [f"{FAKE_USER_PREFIX}{n:06d}" for n in range(fake_users)]
    if set(fake_ids) & set(index.users):
        raise ValueError(f"fake user ids with prefix {FAKE_USER_PREFIX!r} collide with real ones")
    popularity = train.groupby("item_id").size().drop(target_item, errors="ignore").sort_index()
    n_fillers = min(filler_items, len(popularity))
    # Gumbel top-k: per fake user, n_fillers distinct items drawn with probability by popularity
    keys = np.log(popularity.to_numpy()) + np.random.default_rng(seed).gumbel(
        size=(fake_users, len(popularity))
    )
    fillers = popularity.index.to_numpy()[np.argsort(-keys, axis=1, kind="stable")[:, :n_fillers]]
    profiles = np.column_stack([np.full(fake_users, target_item, dtype=object), fillers])
    is_target = np.tile(np.r_[True, np.zeros(n_fillers, dtype=bool)], fake_users)
    now = train["last_seen"].max()
    fake = pd.DataFrame(
        {
            "user_id": np.repeat(fake_ids, n_fillers + 1),
            "item_id": profiles.ravel(),
            "views": 1,
            "carts": is_target.astype(np.int64),
            "purchases": is_target.astype(np.int64),
            "sessions": 1,
            "first_seen": now,
            "last_seen": now,
            "confidence": np.where(is_target, train["confidence"].max(), train["confidence"].median()),
            "label": is_target.astype(train["label"].dtype),
        }
    )
    poisoned = pd.concat([train, fake.astype(train.dtypes[fake.columns].to_dict())], ignore_index=True)
    return poisoned, IdIndex(users=tuple(sorted([*index.users, *fake_ids])), items=index.items)


def shilling_sensitivity(
    train: pd.DataFrame,
    index: IdIndex,
    cfg: TrainConfig,
    *,
    target_item: str | None = None,
    fake_user_share: float = 0.05,
    epochs: int | None = None,
) -> dict[str, Any]:
    """How far a bandwagon attack with `fake_user_share` fake accounts lifts an item's exposure.

    Trains the same configuration (same seed) on the clean table and on a
    copy with fake accounts injected, and compares the share of real users
    who had not interacted with the target and now see it in their top-10.
    Fake accounts get as many filler items as a median real user has, so they
    cannot be told apart by profile size. `target_item` defaults to
    `pick_shilling_target(train)`; `epochs` shortens training for a quick test.
    """
    target = target_item or pick_shilling_target(train)
    short = replace(cfg, epochs=cfg.epochs if epochs is None else epochs)
    fake_users = round(fake_user_share * index.n_users)
    poisoned, poisoned_index = inject_shilling(
        train,
        index,
        target_item=target,
        fake_users=fake_users,
        filler_items=max(int(train.groupby("user_id").size().median()) - 1, 0),
        seed=cfg.seed,
    )
    reached = set(train.loc[train["item_id"] == target, "user_id"])
    audience = [user for user in index.users if user not in reached]
    clean = target_exposure(train_bpr(train, index, short), index, target, audience)
    attacked = target_exposure(train_bpr(poisoned, poisoned_index, short), poisoned_index, target, audience)
    return {
        "target_item": target,
        "fake_users": fake_users,
        "exposure_clean": clean,
        "exposure_poisoned": attacked,
        "exposure_lift": attacked - clean,
    }
