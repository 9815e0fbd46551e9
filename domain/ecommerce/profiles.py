"""Statistics of a collected window, compared against the trusted baseline.

A profile is small JSON: shares of event types and ratings, the share of
activity from brand-new accounts, and the largest burst of near-duplicate
reviews on one item. Shilling attacks (fake accounts pushing an item with
coordinated clicks and copy-paste five-star reviews) move exactly these.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from domain.tables import table_batches

NEW_ACCOUNT_DAYS = 7
SHINGLE_WORDS = 3
MINHASH_PERMUTATIONS = 32
MINHASH_BANDS = 8  # 8 bands of 4 rows: pairs with Jaccard >= ~0.6 share a bucket
_PRIME = (1 << 61) - 1
_rng = np.random.default_rng(20261126)
_A = _rng.integers(1, _PRIME, MINHASH_PERMUTATIONS, dtype=np.uint64)
_B = _rng.integers(0, _PRIME, MINHASH_PERMUTATIONS, dtype=np.uint64)
_WORD = re.compile(r"[a-z0-9']+")


def _shares(values: pd.Series) -> dict[str, float]:
    return _shares_of_counts(values.astype(str).value_counts())


def _shares_of_counts(counts: pd.Series) -> dict[str, float]:
    shares = counts / counts.sum()
    return {str(k): float(v) for k, v in shares.sort_index().items()}


def _first_seen(frame: pd.DataFrame, time_column: str) -> pd.DataFrame:
    """Per user: when first seen in `frame`, and the account's creation date."""
    return frame.groupby("user_id").agg(first=(time_column, "min"), created=("account_created", "first"))


def _new_account_share(first: pd.DataFrame) -> float:
    """Share of distinct active users whose account was under a week old when first seen.

    Counted per user, not per event, so one busy new customer does not look
    like a wave of fake accounts.
    """
    if first.empty:
        return 0.0
    age = first["first"].dt.tz_convert(None).dt.normalize() - pd.to_datetime(first["created"])
    return float((age < pd.Timedelta(days=NEW_ACCOUNT_DAYS)).mean())


def _add(total: pd.Series | pd.DataFrame | None, part, how):
    """`part` folded into the running `total` per key (`how`: an aggregation per column)."""
    return part if total is None else pd.concat([total, part]).groupby(level=0).agg(how)


def activity_profile(path: Path) -> dict:
    """Event-type mix, new-account share and how concentrated carts/purchases are on one item.

    Read in bounded batches: what is kept is per event type, per item and per user, not per event.
    """
    rows, types, intent_items, first = 0, None, None, None
    columns = ["event_type", "user_id", "item_id", "event_time", "account_created"]
    for frame in table_batches(path, columns):
        rows += len(frame)
        types = _add(types, frame["event_type"].astype(str).value_counts(), "sum")
        intent = frame.loc[frame["event_type"] != "view", "item_id"].value_counts()
        intent_items = _add(intent_items, intent, "sum")
        first = _add(first, _first_seen(frame, "event_time"), {"first": "min", "created": "first"})
    return {
        "rows": rows,
        "event_type_shares": _shares_of_counts(types) if rows else {},
        "top_item_intent_share": float(intent_items.max() / intent_items.sum())
        if intent_items is not None and intent_items.sum()
        else 0.0,
        "new_account_share": _new_account_share(first) if first is not None else 0.0,
    }


def source_rates(path: Path, time_column: str) -> dict[str, dict[str, float]]:
    """Records per source and per hour of the time they span (as the intake reports them)."""
    spans = None
    for frame in table_batches(path, ["source", time_column]):
        part = frame[time_column].dt.floor("h").groupby(frame["source"]).agg(["size", "min", "max"])
        spans = _add(spans, part, {"size": "sum", "min": "min", "max": "max"})
    rates = {}
    for source, (records, first, last) in (spans if spans is not None else pd.DataFrame()).iterrows():
        span = int((last - first) / pd.Timedelta(hours=1)) + 1
        rates[str(source)] = {"records": int(records), "hours": span, "records_per_hour": records / span}
    return rates


def _minhash(text: str) -> np.ndarray:
    words = _WORD.findall(text.lower())
    shingles = {" ".join(words[i : i + SHINGLE_WORDS]) for i in range(max(1, len(words) - SHINGLE_WORDS + 1))}
    hashes = np.fromiter((zlib.crc32(s.encode()) for s in shingles), dtype=np.uint64)
    # (a*x + b) mod p per permutation; x < 2^32 and a < 2^61 would overflow, so fold a first.
    return (((_A[:, None] % (1 << 31)) * hashes[None, :] + _B[:, None]) % _PRIME).min(axis=1)


def near_duplicate_clusters(frame: pd.DataFrame) -> pd.DataFrame:
    """Per item, the size of the largest group of near-identical review texts (MinHash LSH)."""
    if frame.empty:
        return pd.DataFrame(columns=["item_id", "cluster"])
    signatures = np.vstack([_minhash(f"{t} {x}") for t, x in zip(frame["title"], frame["text"], strict=True)])
    rows = MINHASH_PERMUTATIONS // MINHASH_BANDS
    sizes = []
    for band in range(MINHASH_BANDS):
        keys = signatures[:, band * rows : (band + 1) * rows]
        bucket = pd.Series([k.tobytes() for k in keys], index=frame.index)
        sizes.append(frame.assign(bucket=bucket).groupby(["item_id", "bucket"]).size())
    largest = pd.concat(sizes).groupby(level="item_id").max()
    return largest.rename("cluster").reset_index().sort_values("cluster", ascending=False)


def review_profile(path: Path) -> dict:
    """Rating mix, new-account share and near-duplicate bursts of an accepted review table."""
    frame = pq.read_table(
        path,
        columns=["item_id", "user_id", "rating", "title", "text", "review_time", "account_created"],
    ).to_pandas()
    clusters = near_duplicate_clusters(frame)
    top = clusters.iloc[0] if len(clusters) else None
    return {
        "rows": len(frame),
        "rating_shares": _shares(frame["rating"]),
        "new_account_share": _new_account_share(_first_seen(frame, "review_time")),
        "largest_near_duplicate_cluster": int(top["cluster"]) if top is not None else 0,
        "largest_cluster_item": str(top["item_id"]) if top is not None else "",
    }
