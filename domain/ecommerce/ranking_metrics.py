"""Ranking metrics of the e-commerce recommender: held-out recall and NDCG, popularity, exposure.

`evaluate` ranks every item a user has not trained on and measures
leave-last-out recall@k and NDCG@k; `popularity_baseline` gives the same
metrics for recommending the most popular items (what a model must beat);
`target_exposure` is the share of users who see an item in their top-k, the
figure shilling sensitivity (`domain.ecommerce.shilling`) compares.
Scores are computed `EVAL_BATCH_USERS` users at a time, so memory stays at a
batch of users times the number of items.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from domain.ecommerce.recommender import IdIndex, MatrixFactorization, pair_positions, user_scores

EVAL_BATCH_USERS = 1024  # users ranked per step: bounds memory at users x items


def evaluate(
    model: MatrixFactorization, train: pd.DataFrame, heldout: pd.DataFrame, index: IdIndex, k: int = 10
) -> dict[str, float | int]:
    """Held-out recall@k and NDCG@k of the model, ranking every item a user has not trained on."""
    return _rank_metrics(lambda users: user_scores(model, users), train, heldout, index, k)


def popularity_baseline(
    train: pd.DataFrame, heldout: pd.DataFrame, index: IdIndex, k: int = 10
) -> dict[str, float | int]:
    """The same metrics for recommending the items most users interacted with in training."""
    counts = np.bincount(index.item_positions(train["item_id"]), minlength=index.n_items)
    popularity = torch.from_numpy(counts.astype(np.float32))
    return _rank_metrics(lambda users: popularity.expand(len(users), -1).clone(), train, heldout, index, k)


def _rank_metrics(
    score_users: Callable[[np.ndarray], torch.Tensor],
    train: pd.DataFrame,
    heldout: pd.DataFrame,
    index: IdIndex,
    k: int,
) -> dict[str, float | int]:
    """Mean recall@k and NDCG@k over the held-out users, scored EVAL_BATCH_USERS users at a time.

    Each user's training items are excluded from their ranking; memory stays
    at a batch of users times the number of items.
    """
    train_users, train_items = pair_positions(train, index)
    held_users, held_items = pair_positions(heldout, index)
    users = np.unique(held_users)
    discounts = 1.0 / torch.log2(torch.arange(k, dtype=torch.float64) + 2.0)
    recall, ndcg = 0.0, 0.0
    for start in range(0, len(users), EVAL_BATCH_USERS):
        batch = users[start : start + EVAL_BATCH_USERS]
        scores = score_users(batch)
        scores[_rows_in(batch, train_users, train_items)] = -torch.inf
        relevant = torch.zeros_like(scores, dtype=torch.bool)
        relevant[_rows_in(batch, held_users, held_items)] = True
        top = scores.topk(min(k, index.n_items), dim=1).indices
        hits = relevant.gather(1, top).double()
        n_relevant = relevant.sum(1).double()
        ideal = torch.cumsum(discounts, 0)[(n_relevant.clamp(max=k) - 1).long()]
        recall += (hits.sum(1) / n_relevant).sum().item()
        ndcg += ((hits * discounts[: top.shape[1]]).sum(1) / ideal).sum().item()
    n = max(len(users), 1)
    return {f"recall@{k}": recall / n, f"ndcg@{k}": ndcg / n, "users": len(users)}


def _rows_in(batch: np.ndarray, users: np.ndarray, items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(row in batch, item) coordinates of the (user, item) pairs whose user is in the sorted `batch`."""
    inside = np.isin(users, batch)
    rows = np.searchsorted(batch, users[inside])
    return torch.from_numpy(rows), torch.from_numpy(items[inside])


def exposed_users(
    model: MatrixFactorization, index: IdIndex, item_id: str, users: list[str], k: int = 10
) -> np.ndarray:
    """For each of `users`, whether their top-k over all items contains `item_id`."""
    item = int(index.item_positions([item_id])[0])
    positions = index.user_positions(users)
    exposed = np.zeros(len(positions), dtype=bool)
    for start in range(0, len(positions), EVAL_BATCH_USERS):
        scores = user_scores(model, positions[start : start + EVAL_BATCH_USERS])
        top = scores.topk(min(k, index.n_items), dim=1).indices
        exposed[start : start + len(top)] = (top == item).any(1).numpy()
    return exposed


def target_exposure(
    model: MatrixFactorization, index: IdIndex, item_id: str, users: list[str], k: int = 10
) -> float:
    """Share of `users` whose top-k over all items contains `item_id`."""
    return float(exposed_users(model, index, item_id, users, k).mean()) if users else 0.0
