"""The e-commerce recommender: matrix factorisation trained with BPR, in PyTorch.

Pure model code with no Dagster and no I/O beyond `save_model`/`load_model`.
The modeling assets call these functions on the `interactions` table
(`user_id`, `item_id`, `views`, `carts`, `purchases`, `sessions`,
`first_seen`, `last_seen`, `confidence`, `label`) and publish the result.

Security properties this module owns:

- **Nothing is pickled.** Weights are a safetensors file (a JSON header plus
  raw tensor bytes) and everything else is JSON. `load_model` builds the
  network from code and only then fills it from the safetensors file, so a
  model directory cannot carry code (OWASP LLM03 Supply Chain, MITRE ATLAS
  AML.T0011.000 Unsafe AI Artifacts).
- **Deterministic training.** The same table, index and `TrainConfig` give
  bit-identical weights on CPU, so a model can be reproduced and audited from
  its recorded inputs.

Held-out recall/NDCG, the popularity baseline and item exposure are
`domain.ecommerce.ranking_metrics`; shilling sensitivity (fake accounts
pushing an item) is `domain.ecommerce.shilling`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from resources.model_files import load_model_dir, save_model_dir

MODEL_NAME = "matrix_factorization"
INIT_STD = 0.1


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one BPR training run.

    `weight_decay` is an L2 penalty on the embedding rows and biases each
    batch touches (the usual BPR regulariser), not optimiser-wide decay that
    would shrink every row on every step.
    """

    dim: int = 32
    epochs: int = 20
    lr: float = 0.01
    weight_decay: float = 0.03
    batch_size: int = 4096
    negatives: int = 1
    seed: int = 7
    device: str = "cpu"
    # Confidence above this quantile counts as the quantile: no single row (say, a fake
    # account's maximal "purchase") gets outsized leverage over the embeddings.
    confidence_cap_quantile: float = 0.9

    def __post_init__(self) -> None:
        counts = {
            "dim": self.dim,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "negatives": self.negatives,
        }
        if (
            min(counts.values()) < 1
            or self.lr <= 0
            or self.weight_decay < 0
            or not 0 < self.confidence_cap_quantile <= 1
        ):
            raise ValueError(f"invalid training configuration: {self}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return cls(**data)


@dataclass(frozen=True)
class IdIndex:
    """Contiguous positions of user and item ids, sorted so that the same ids give the same index."""

    users: tuple[str, ...]
    items: tuple[str, ...]

    def __post_init__(self) -> None:
        for kind, ids in (("user", self.users), ("item", self.items)):
            if list(ids) != sorted(set(ids)):
                raise ValueError(f"{kind} ids must be unique and sorted")

    @classmethod
    def from_interactions(cls, interactions: pd.DataFrame) -> IdIndex:
        """The index of every user and item that appears in `interactions`."""
        return cls(
            users=tuple(sorted(interactions["user_id"].unique())),
            items=tuple(sorted(interactions["item_id"].unique())),
        )

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @cached_property
    def _user_lookup(self) -> pd.Index:
        return pd.Index(self.users)

    @cached_property
    def _item_lookup(self) -> pd.Index:
        return pd.Index(self.items)

    def user_positions(self, user_ids: Any) -> np.ndarray:
        """Positions of `user_ids`; an unknown id raises KeyError."""
        return _positions(self._user_lookup, user_ids, "user")

    def item_positions(self, item_ids: Any, *, skip_unknown: bool = False) -> np.ndarray:
        """Positions of `item_ids`; an unknown id raises KeyError, or is left out with `skip_unknown`."""
        if skip_unknown:
            item_ids = [item for item in item_ids if item in self._item_lookup]
        return _positions(self._item_lookup, item_ids, "item")

    def to_dict(self) -> dict[str, list[str]]:
        return {"users": list(self.users), "items": list(self.items)}

    @classmethod
    def from_dict(cls, data: dict[str, list[str]]) -> IdIndex:
        return cls(users=tuple(data["users"]), items=tuple(data["items"]))


def _positions(lookup: pd.Index, ids: Any, kind: str) -> np.ndarray:
    positions = lookup.get_indexer(pd.Index(ids))
    if (positions < 0).any():
        unknown = pd.Index(ids)[positions < 0][:5].tolist()
        raise KeyError(f"unknown {kind} ids: {unknown}")
    return positions.astype(np.int64)


def split_holdout(
    interactions: pd.DataFrame, *, min_interactions: int = 3
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Leave-last-out split: each user's most recent item (by `last_seen`) is held out.

    Users with fewer than `min_interactions` items stay wholly in train, so no
    user is left with too little history to learn from. Ties on `last_seen`
    are broken by `item_id`, so the split never depends on row order.
    """
    ordered = interactions.sort_values(["user_id", "last_seen", "item_id"], kind="stable")
    by_user = ordered.groupby("user_id", sort=False)
    is_last = by_user.cumcount(ascending=False) == 0
    held = is_last & (by_user["item_id"].transform("size") >= min_interactions)
    return ordered[~held].reset_index(drop=True), ordered[held].reset_index(drop=True)


class MatrixFactorization(nn.Module):
    """score(u, i) = <user_u, item_i> + bias_i: user and item embeddings plus an item bias."""

    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__()
        self.user_embedding = nn.Embedding(n_users, dim)
        self.item_embedding = nn.Embedding(n_items, dim)
        self.item_bias = nn.Embedding(n_items, 1)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Small random embeddings and zero biases, drawn from `generator` only."""
        nn.init.normal_(self.user_embedding.weight, std=INIT_STD, generator=generator)
        nn.init.normal_(self.item_embedding.weight, std=INIT_STD, generator=generator)
        nn.init.zeros_(self.item_bias.weight)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of the pairs (users[j], items[j])."""
        dot = (self.user_embedding(users) * self.item_embedding(items)).sum(-1)
        return dot + self.item_bias(items).squeeze(-1)

    def scores_for_users(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for each user: shape [len(users), n_items]."""
        return self.user_embedding(users) @ self.item_embedding.weight.T + self.item_bias.weight.T

    def architecture(self) -> dict[str, Any]:
        """What `build_from_architecture` needs to rebuild this network from code."""
        return {
            "name": MODEL_NAME,
            "n_users": self.user_embedding.num_embeddings,
            "n_items": self.item_embedding.num_embeddings,
            "dim": self.user_embedding.embedding_dim,
        }


def build_from_architecture(arch: dict[str, Any]) -> MatrixFactorization:
    """An untrained network shaped as `arch` declares.

    The architecture is a small JSON record interpreted by this code; the
    network is never deserialised from a stored object, so a model file cannot
    bring its own code.
    """
    expected = {"name", "n_users", "n_items", "dim"}
    if set(arch) != expected:
        raise ValueError(f"architecture must have exactly the keys {sorted(expected)}, got {sorted(arch)}")
    if arch["name"] != MODEL_NAME:
        raise ValueError(f"unknown architecture {arch['name']!r}; expected {MODEL_NAME!r}")
    sizes = {key: arch[key] for key in ("n_users", "n_items", "dim")}
    if not all(isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in sizes.values()):
        raise ValueError(f"architecture sizes must be positive integers, got {sizes}")
    return MatrixFactorization(**sizes)


def _training_rows(
    train: pd.DataFrame, index: IdIndex, device: torch.device, cap_quantile: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """User and item positions and positive weights of the rows, sorted so that row order never matters.

    The weights are the rows' confidence, capped at the `cap_quantile`
    quantile and scaled to mean 1, so the learning rate means the same
    whatever the confidence formula's scale.
    """
    users, items = pair_positions(train, index)
    order = np.lexsort((items, users))
    confidence = train["confidence"].to_numpy(dtype=np.float64)[order]
    confidence = np.minimum(confidence, np.quantile(confidence, cap_quantile))
    weights = (confidence / confidence.mean()).astype(np.float32)
    return (
        torch.from_numpy(users[order]).to(device),
        torch.from_numpy(items[order]).to(device),
        torch.from_numpy(weights).to(device),
    )


def pair_positions(interactions: pd.DataFrame, index: IdIndex) -> tuple[np.ndarray, np.ndarray]:
    return index.user_positions(interactions["user_id"]), index.item_positions(interactions["item_id"])


def train_bpr(
    train: pd.DataFrame,
    index: IdIndex,
    cfg: TrainConfig,
    *,
    log: Callable[[str], None] | None = None,
) -> MatrixFactorization:
    """Matrix factorisation fitted with confidence-weighted BPR and uniform negative sampling.

    Every (user, item) row is a positive; each epoch pairs it with
    `cfg.negatives` items drawn uniformly and minimises
    -confidence * log sigmoid(score(pos) - score(neg)) with Adam. All
    randomness comes from generators seeded by `cfg.seed` (a torch generator
    for the initial weights, a numpy generator for shuffling and negatives)
    and rows are sorted first, so the same input gives the same weights on
    CPU whatever the row order. Returns the model on CPU in eval mode.
    """
    device = torch.device(cfg.device)
    model = MatrixFactorization(index.n_users, index.n_items, cfg.dim)
    model.reset_parameters(torch.Generator().manual_seed(cfg.seed))
    model.to(device).train()
    users, items, weights = _training_rows(train, index, device, cfg.confidence_cap_quantile)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    for epoch in range(cfg.epochs):
        total = torch.zeros((), device=device)
        for rows, negatives in _epoch_batches(len(users), index.n_items, cfg, rng):
            rows = torch.from_numpy(rows).to(device)
            negatives = torch.from_numpy(negatives).to(device)
            loss = _batch_loss(model, users[rows], items[rows], negatives, weights[rows], cfg.weight_decay)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(rows)
        if log is not None:
            log(f"epoch {epoch + 1}/{cfg.epochs}: loss {total.item() / len(users):.4f}")
    return model.cpu().eval()


def _epoch_batches(
    n_rows: int, n_items: int, cfg: TrainConfig, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch in shuffled batches of row positions, each row with its uniformly drawn negatives."""
    order = rng.permutation(n_rows)
    negatives = rng.integers(n_items, size=(n_rows, cfg.negatives))
    for start in range(0, n_rows, cfg.batch_size):
        yield order[start : start + cfg.batch_size], negatives[start : start + cfg.batch_size]


def _batch_loss(
    model: MatrixFactorization,
    users: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    weights: torch.Tensor,
    weight_decay: float,
) -> torch.Tensor:
    """Confidence-weighted BPR, -w * log sigmoid(score(pos) - score(neg)), plus L2 on the rows used."""
    user_vectors = model.user_embedding(users)
    positive_vectors, negative_vectors = model.item_embedding(positives), model.item_embedding(negatives)
    positive_bias = model.item_bias(positives).squeeze(-1)
    negative_bias = model.item_bias(negatives).squeeze(-1)
    positive = (user_vectors * positive_vectors).sum(-1) + positive_bias
    negative = torch.einsum("bd,bnd->bn", user_vectors, negative_vectors) + negative_bias
    ranking = -(F.logsigmoid(positive.unsqueeze(-1) - negative).mean(-1) * weights).mean()
    l2 = (
        user_vectors.square().sum(-1)
        + positive_vectors.square().sum(-1)
        + positive_bias.square()
        + (negative_vectors.square().sum(-1) + negative_bias.square()).mean(-1)
    )
    return ranking + weight_decay * l2.mean()


@torch.no_grad()
def user_scores(model: MatrixFactorization, users: np.ndarray) -> torch.Tensor:
    """Scores of every item for the users at positions `users`, on CPU, wherever the model lives."""
    device = model.item_embedding.weight.device
    return model.scores_for_users(torch.from_numpy(users).to(device)).cpu()


def recommend(
    model: MatrixFactorization, index: IdIndex, user_id: str, k: int, exclude: set[str]
) -> list[tuple[str, float]]:
    """The user's top-k items with their scores, best first, leaving out the items in `exclude`.

    Excluded ids the index does not know are ignored; an unknown user raises KeyError.
    """
    scores = user_scores(model, index.user_positions([user_id]))[0]
    excluded = index.item_positions(sorted(exclude), skip_unknown=True)
    scores[torch.from_numpy(excluded)] = -torch.inf
    top = scores.topk(min(k, index.n_items - len(excluded)))
    return [
        (index.items[i], float(s)) for s, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]


def save_model(
    model: MatrixFactorization,
    index: IdIndex,
    cfg: TrainConfig,
    metrics: dict[str, Any],
    directory: Path,
    *,
    version: int,
) -> Path:
    """Write the model, its id index, training config and metrics as a model directory (written once)."""
    config = {
        "architecture": model.architecture(),
        "train_config": cfg.to_dict(),
        "id_index": index.to_dict(),
        "metrics": metrics,
        "version": version,
    }
    return save_model_dir(model, config, directory)


def load_model(directory: Path) -> tuple[MatrixFactorization, IdIndex, dict[str, Any]]:
    """The model, id index and config stored in `directory` by `save_model`.

    The network is built from code and the weights read from safetensors only
    (`resources.model_files`); an id index whose sizes differ from the declared
    architecture is refused with ValueError.
    """

    def check(model: nn.Module, config: dict[str, Any]) -> None:
        index = IdIndex.from_dict(config["id_index"])
        if (index.n_users, index.n_items) != (
            model.architecture()["n_users"],
            model.architecture()["n_items"],
        ):
            raise ValueError(
                f"id index has {index.n_users} users and {index.n_items} items, "
                f"the architecture declares {config['architecture']}"
            )

    model, config = load_model_dir(
        directory, build_from_architecture, {"id_index", "train_config", "metrics"}, check
    )
    index = IdIndex.from_dict(config["id_index"])
    return model, index, config
