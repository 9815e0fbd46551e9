"""ATTACK SIMULATION — data poisoning that avoids the signals of the lab's first shilling campaign.

Two campaigns push one item without writing a review and without opening a
new account, so neither the new-account share nor the near-duplicate review
check has anything to see:

- **aged accounts**: accounts opened one to three years ago (bought or
  taken over; to the intake they are established customers) each view, cart
  and buy the target and view a few of the shop's best sellers, the
  bandwagon profile that ties the target to popular taste;
- **average profiles**: each fake profile copies the shape of a real one —
  as many items as a real user of the window touches, drawn by the items'
  real popularity and carted or bought at the shop's real rates, with a real
  user's account date — plus the target, bought.

The sources are honest: they sign what the fake users did.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np

from examples.attacks.lab import Scenario
from examples.ecommerce.attacks.data_poisoning import TARGET_ITEM
from examples.ecommerce.attacks.harm import exposure_lift
from examples.ecommerce.shop import Shop
from examples.ecommerce.sources import iso_z

ACCOUNT_SHARE = 0.10  # of the window's users: a 3% campaign leaves the target's exposure where it was
BEST_SELLERS = 10  # aged accounts pick their filler items among the shop's most reached ones
AGED_FILLERS = 4
FUNNEL = ("view", "add_to_cart", "purchase")
STEP_SECONDS = (40, 300)  # between two events of a fake session


def _start_times(real: list[dict], accounts: int, rng: np.random.Generator) -> list[datetime]:
    """When each fake account starts: at a real event's time, early enough to finish inside the window."""
    times = sorted(datetime.fromisoformat(p["event_time"]) for p in real)
    return [times[i] for i in rng.integers(0, int(0.8 * len(times)), size=accounts)]


def _session(
    user: str, created: str, start: datetime, interactions: list[tuple[str, int]], prices: dict[str, float],
    rng: np.random.Generator,
) -> list[dict]:  # fmt: skip
    """One fake account's events: each (item, funnel depth) in turn, in one session from `start`."""
    events, moment = [], start
    for item, depth in interactions:
        for kind in FUNNEL[:depth]:
            events.append(
                {
                    "event_id": f"{user}-{len(events):04d}",
                    "event_type": kind,
                    "user_id": user,
                    "item_id": item,
                    "session_id": f"{user}-s",
                    "event_time": iso_z(moment),
                    "price": prices[item],
                    "account_created": created,
                }
            )
            moment += timedelta(seconds=int(rng.integers(*STEP_SECONDS)))
    return events


def aged_account_campaign(
    real: list[dict], share: float, *, target: str = TARGET_ITEM, seed: int = 0
) -> list[dict]:
    """Events of `share` x the window's users aged accounts buying `target` among a few best sellers."""
    rng = np.random.default_rng(seed)
    users = {p["user_id"] for p in real}
    prices = {p["item_id"]: p["price"] for p in real}
    reach = Counter(item for item, _ in {(p["item_id"], p["user_id"]) for p in real})
    best = [item for item, _ in reach.most_common() if item != target][:BEST_SELLERS]
    accounts = max(10, round(share * len(users)))
    events = []
    for n, start in enumerate(_start_times(real, accounts, rng)):
        age = timedelta(days=int(rng.integers(365, 3 * 365)))
        fillers = [(str(item), 1) for item in rng.choice(best, size=AGED_FILLERS, replace=False)]
        interactions = [*fillers[:2], (target, 3), *fillers[2:]]
        created = (start - age).astimezone(UTC).strftime("%Y-%m-%d")
        events += _session(f"u{8_600_000 + n}", created, start, interactions, prices, rng)
    return events


def average_profile_campaign(
    real: list[dict], share: float, *, target: str = TARGET_ITEM, seed: int = 0
) -> list[dict]:
    """Events of `share` x the window's users fake profiles shaped like real ones, each buying `target`."""
    rng = np.random.default_rng(seed)
    prices = {p["item_id"]: p["price"] for p in real}
    depth: dict[tuple[str, str], int] = {}
    for p in real:
        pair = (p["user_id"], p["item_id"])
        depth[pair] = max(depth.get(pair, 0), FUNNEL.index(p["event_type"]) + 1)
    sizes = np.array(list(Counter(user for user, _ in depth).values()))
    depths = np.array(list(depth.values()))
    popularity = Counter(item for _, item in depth)
    popularity.pop(target, None)
    items = sorted(popularity)
    weights = np.array([popularity[item] for item in items], float)
    created = sorted({p["user_id"]: p["account_created"] for p in real}.values())
    accounts = max(10, round(share * len(sizes)))
    events = []
    for n, start in enumerate(_start_times(real, accounts, rng)):
        size = min(int(rng.choice(sizes)), len(items))
        fillers = rng.choice(items, size=size, replace=False, p=weights / weights.sum())
        drawn = zip(fillers, rng.choice(depths, size), strict=True)
        interactions = [(str(item), int(d)) for item, d in drawn]
        interactions.insert(int(rng.integers(0, size + 1)), (target, 3))
        user = f"u{8_700_000 + n}"
        events += _session(user, str(rng.choice(created)), start, interactions, prices, rng)
    return events


def _mount(campaign: Callable[[list[dict], float], list[dict]]) -> Callable[[Shop], None]:
    def mount(shop: Shop, share: float = ACCOUNT_SHARE) -> None:
        """Land the campaign as clickstream traffic, `share` fake accounts of the window's users, and run
        the lifecycle over it."""
        events = campaign(shop.payloads("user-activity"), share)
        shop.land("web-clickstream", events, batch_id="web-clickstream-campaign-000001")
        shop.lifecycle()

    return mount


mount_aged_accounts = _mount(aged_account_campaign)
mount_average_profiles = _mount(average_profile_campaign)

AGED_ACCOUNTS = Scenario(
    "ecommerce/aged-account-shilling",
    "data poisoning",
    f"{ACCOUNT_SHARE:.0%} accounts opened years ago buy one item among best sellers; no reviews",
    mount_aged_accounts,
    harm=exposure_lift(TARGET_ITEM),
)
AVERAGE_PROFILES = Scenario(
    "ecommerce/average-profile-shilling",
    "data poisoning",
    f"{ACCOUNT_SHARE:.0%} fake profiles with real users' size, item popularity and account dates "
    "buy one item; no reviews",
    mount_average_profiles,
    harm=exposure_lift(TARGET_ITEM),
)
