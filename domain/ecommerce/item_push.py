"""Per-item push detection: does one item draw more users, or more committed users, than it should?

A shilling campaign needs many accounts to interact with one target item;
whatever the accounts look like (old, with ordinary or popularity-matched
filler items, with or without reviews), that is what it cannot hide. Two
shares per item are compared with the trusted reference window, each
counted in distinct users, so one busy customer who views an item forty
times is one user, not forty correlated events:

- **reach**: the share of the window's users who touched the item. Fake
  accounts that view or buy the target raise it;
- **buyers**: the share of the window's users who added the item to a cart
  or bought it. A campaign buys the target to give it the strongest implicit
  feedback, and buyers are rarer than viewers, so this moves furthest;
- **commitment**: the share of the item's own users who carted or bought it.
  An item that merely trends draws more viewers who buy at its usual rate,
  so this share stays where it was; a campaign that buys moves it.

Each share is a one-sided calibrated test (`domain.distribution.share_shift`)
against the reference's, its null taken at the share both windows would have
in common if nothing moved, and the false-alarm rate is split over every
test the window makes (Bonferroni): a shop with many items is not stopped
more often for having them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from domain.distribution import DEFAULT_FALSE_ALARM_RATE, CalibratedTest, share_shift
from domain.tables import table_batches

COMMITTED_EVENTS = ("add_to_cart", "purchase")


@dataclass(frozen=True)
class ItemReach:
    """Distinct users of a window, and per item the users who touched it and who carted or bought it."""

    users: int
    reached: dict[str, int]
    committed: dict[str, int]

    def to_dict(self) -> dict:
        return {"users": self.users, "reached": self.reached, "committed": self.committed}

    @classmethod
    def from_dict(cls, data: dict) -> ItemReach:
        return cls(int(data["users"]), dict(data["reached"]), dict(data["committed"]))


class _Codes:
    """Dense integer codes for string ids, assigned as new ids are seen."""

    def __init__(self) -> None:
        self.ids = pd.Index([], dtype=object)

    def of(self, values: pd.Series) -> np.ndarray:
        new = pd.Index(values.unique()).difference(self.ids)
        if len(new):
            self.ids = self.ids.append(new)
        return self.ids.get_indexer(values).astype(np.int64)


class ReachCounter:
    """Counts `ItemReach` over a table given in batches, holding each distinct (item, user) pair as
    one integer rather than the rows, so memory grows with the pairs and not with the events."""

    def __init__(self) -> None:
        self.users, self.items = _Codes(), _Codes()
        self.reached: list[np.ndarray] = []
        self.committed: list[np.ndarray] = []

    def add(self, frame: pd.DataFrame) -> None:
        """Add activity events (columns user_id, item_id, event_type)."""
        pairs = (self.items.of(frame["item_id"]) << 32) | self.users.of(frame["user_id"])
        self.reached.append(np.unique(pairs))
        self.committed.append(np.unique(pairs[frame["event_type"].isin(COMMITTED_EVENTS).to_numpy()]))

    def _users_per_item(self, pairs: list[np.ndarray]) -> np.ndarray:
        distinct = np.unique(np.concatenate(pairs)) if pairs else np.empty(0, np.int64)
        return np.bincount(distinct >> 32, minlength=len(self.items.ids))

    def result(self) -> ItemReach:
        reached, committed = self._users_per_item(self.reached), self._users_per_item(self.committed)
        order = np.argsort(self.items.ids.to_numpy(dtype=str), kind="stable")
        ids = self.items.ids[order]
        return ItemReach(
            users=len(self.users.ids),
            reached={str(item): int(n) for item, n in zip(ids, reached[order], strict=True)},
            committed={str(item): int(n) for item, n in zip(ids, committed[order], strict=True)},
        )


def item_reach(frame: pd.DataFrame) -> ItemReach:
    """`ItemReach` of activity events (columns user_id, item_id, event_type)."""
    counter = ReachCounter()
    counter.add(frame)
    return counter.result()


def read_item_reach(path: Path) -> ItemReach:
    """`ItemReach` of an activity table stored as Parquet, read in bounded batches."""
    counter = ReachCounter()
    for frame in table_batches(path, ["user_id", "item_id", "event_type"]):
        counter.add(frame)
    return counter.result()


@dataclass(frozen=True)
class ItemPush:
    """One item's calibrated tests by name: "reach", "buyers" and, when the reference saw the item,
    "commitment"."""

    item: str
    tests: dict[str, CalibratedTest]

    @property
    def passed(self) -> bool:
        return all(test.passed for test in self.tests.values())

    @property
    def excess(self) -> float:
        """How far the item is beyond its limits: the largest statistic-to-limit margin of its tests."""
        return max(test.statistic - test.limit for test in self.tests.values())

    def metadata(self, reference: ItemReach, current: ItemReach) -> dict[str, float | int | str]:
        """Flat numbers for a check's metadata: the item's counts on both sides and every test."""
        flat: dict[str, float | int | str] = {
            "item": self.item,
            "reference_users": reference.users,
            "users": current.users,
            "reference_item_users": reference.reached.get(self.item, 0),
            "item_users": current.reached[self.item],
            "reference_item_buyers": reference.committed.get(self.item, 0),
            "item_buyers": current.committed[self.item],
        }
        for name, test in self.tests.items():
            flat |= {f"{name}_{key}": value for key, value in test.metadata().items()}
        return flat


def item_push_tests(
    reference: ItemReach, current: ItemReach, *, false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE
) -> list[ItemPush]:
    """Every item of `current` tested against `reference`, worst first (by `ItemPush.excess`).

    An item the reference never saw gets the reach and buyers tests (its
    reference shares are zero, smoothed, so many users on an unknown item
    fail); its commitment has nothing to be compared with.
    """
    items = sorted(current.reached)
    known = [item for item in items if reference.reached.get(item, 0) > 0]
    tests = 2 * len(items) + len(known)

    def shift(name: str, ref: tuple[int, int], cur: tuple[int, int]) -> CalibratedTest:
        return share_shift(
            name, ref[0] / ref[1], ref[1], cur[0] / cur[1], cur[1],
            one_sided=True, tests=tests, false_alarm_rate=false_alarm_rate,
        )  # fmt: skip

    pushes = []
    for item in items:
        ref = (reference.reached.get(item, 0), reference.committed.get(item, 0), reference.users)
        cur = (current.reached[item], current.committed[item], current.users)
        named = {
            "reach": shift(f"item_reach:{item}", (ref[0], ref[2]), (cur[0], cur[2])),
            "buyers": shift(f"item_buyers:{item}", (ref[1], ref[2]), (cur[1], cur[2])),
        }
        if item in known:
            named["commitment"] = shift(f"item_commitment:{item}", (ref[1], ref[0]), (cur[1], cur[0]))
        pushes.append(ItemPush(item, named))
    return sorted(pushes, key=lambda push: (-push.excess, push.item))
