"""Per-item push check: clean windows of seeds and sizes it was not built on pass, campaigns that avoid
the new-account and review checks fail, and what only looks like a push (a busy user, a trend) does not."""

import json

import numpy as np
import pandas as pd
import pytest

from domain.ecommerce.item_push import ItemReach, item_push_tests, item_reach
from examples.ecommerce.attacks.stealth_shilling import (
    ACCOUNT_SHARE,
    TARGET_ITEM,
    aged_account_campaign,
    average_profile_campaign,
)
from examples.ecommerce.shop import MODEL_EVENTS
from examples.ecommerce.world.config import WorldConfig
from examples.ecommerce.world.simulation import build_world

CLEAN_SEEDS = range(101, 111)  # not the lab's seeds, nor the ones the scenarios were written on


def _window(seed: int, events: int, period: int) -> list[dict]:
    return list(build_world(WorldConfig(seed=seed, events=events), period=period).activity_events())


def _reach(payloads: list[dict]) -> ItemReach:
    return item_reach(pd.DataFrame(payloads))


@pytest.fixture(scope="module")
def lab_shop() -> tuple[ItemReach, list[dict]]:
    """The lab's world: the reference window's reach and the collected window's events."""
    return _reach(_window(7, MODEL_EVENTS, -1)), _window(7, MODEL_EVENTS, 0)


@pytest.mark.slow
@pytest.mark.parametrize("events", [MODEL_EVENTS, 3 * MODEL_EVENTS], ids=["lab", "large"])
def test_clean_windows_of_unseen_seeds_pass(events):
    failed = {}
    for seed in CLEAN_SEEDS:
        pushes = item_push_tests(_reach(_window(seed, events, -1)), _reach(_window(seed, events, 0)))
        assert pushes[0].tests["reach"].tests == sum(len(p.tests) for p in pushes)
        failed |= {(seed, p.item): p.excess for p in pushes if not p.passed}
    assert not failed, failed


@pytest.mark.parametrize("campaign", [aged_account_campaign, average_profile_campaign])
def test_campaigns_without_reviews_or_new_accounts_fail_on_their_target(lab_shop, campaign):
    reference, real = lab_shop
    fake = campaign(real, ACCOUNT_SHARE)
    pushes = item_push_tests(reference, _reach(real + fake))
    failed = [p for p in pushes if not p.passed]
    assert [p.item for p in failed] == [TARGET_ITEM], [(p.item, p.excess) for p in failed]
    target = failed[0]
    assert not target.tests["buyers"].passed
    assert target.metadata(reference, _reach(real + fake))["item_users"] > reference.reached[TARGET_ITEM]


def test_one_busy_user_is_one_user_not_a_push(lab_shop):
    reference, real = lab_shop
    rarest = min(reference.reached, key=reference.reached.get)
    template = next(e for e in real if e["item_id"] == rarest)
    binge = [
        {**template, "event_id": f"binge{n:04d}", "event_type": kind}
        for n, kind in enumerate(["view", "add_to_cart", "purchase"] * 100)
    ]
    events_on_item = sum(e["item_id"] == rarest for e in real)
    assert len(binge) > 2 * events_on_item  # as events, the item's volume more than trebled
    assert all(p.passed for p in item_push_tests(reference, _reach(real + binge)))


def test_a_trend_raises_an_items_reach_but_not_the_share_of_its_users_who_buy(lab_shop):
    """More real users look at the item and buy it at its usual rate: the commitment test passes."""
    reference, real = lab_shop
    rng = np.random.default_rng(3)
    item = TARGET_ITEM
    rate = reference.committed[item] / reference.reached[item]
    template = next(e for e in real if e["item_id"] == item)
    reached = {e["user_id"] for e in real if e["item_id"] == item}
    newcomers = sorted({e["user_id"] for e in real} - reached)[: 2 * len(reached)]
    trend = []
    for user in newcomers:
        kinds = ["view", "add_to_cart"] if rng.random() < rate else ["view"]
        trend += [{**template, "event_id": f"t{user}{k}", "user_id": user, "event_type": k} for k in kinds]
    push = next(p for p in item_push_tests(reference, _reach(real + trend)) if p.item == item)
    assert not push.tests["reach"].passed  # a large trend is a shift a reviewer should see
    assert push.tests["commitment"].passed, push.tests["commitment"]


def test_item_reach_counts_distinct_users_and_survives_json():
    frame = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "c"],
            "item_id": ["x", "x", "y", "x", "y"],
            "event_type": ["view", "purchase", "view", "view", "add_to_cart"],
        }
    )
    reach = item_reach(frame)
    assert reach == ItemReach(users=3, reached={"x": 2, "y": 2}, committed={"x": 1, "y": 1})
    assert ItemReach.from_dict(json.loads(json.dumps(reach.to_dict()))) == reach


def test_an_item_the_reference_never_saw_is_tested_without_a_commitment():
    reference = ItemReach(users=500, reached={"x": 100}, committed={"x": 20})
    current = ItemReach(users=500, reached={"x": 100, "new": 60}, committed={"x": 20, "new": 60})
    pushes = {p.item: p for p in item_push_tests(reference, current)}
    assert set(pushes["new"].tests) == {"reach", "buyers"} and not pushes["new"].passed
    assert pushes["x"].passed and pushes["x"].tests["reach"].tests == 5
