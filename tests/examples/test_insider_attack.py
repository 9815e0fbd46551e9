"""An insider holding the pipeline's credentials cannot approve their own transformation code."""

import pytest

from examples.attacks.lab import fresh_home, read_runs
from examples.ecommerce.attacks import SCENARIOS as ECOMMERCE
from examples.ecommerce.shop import Shop
from examples.healthcare.attacks import SCENARIOS as HEALTHCARE
from resources.code_approval import POWER
from resources.signed_records import public_key_b64

pytestmark = pytest.mark.slow

SCENARIO = "ecommerce/insider-self-approval"


def test_both_examples_carry_the_scenario():
    assert SCENARIO in {s.name for s in ECOMMERCE}
    assert "healthcare/insider-self-approval" in {s.name for s in HEALTHCARE}


def test_code_approved_with_the_pipelines_own_key_is_refused_before_anything_is_processed(tmp_path):
    [scenario] = [s for s in ECOMMERCE if s.name == SCENARIO]
    shop = Shop(fresh_home(tmp_path / "home"), log_level="CRITICAL")  # small: processing is what counts
    scenario.prepare(shop)
    before = len(shop.runs)
    scenario.mount(shop)
    outcome = read_runs(shop, shop.runs[before:], 0.0, scenario)

    assert outcome.detected and outcome.stage == "processing" and outcome.errors == []
    assert outcome.check.endswith("refused (CodeNotApproved)")
    assert {"activity_events", "product_reviews"} <= set(outcome.materialised_before_stop)
    processing = {"sessions", "interactions", "scored_reviews", "item_features"}
    assert not processing & set(outcome.materialised_before_stop)
    # The insider's key did land in the store's approver log; it is not an approver all the same.
    insider = public_key_b64(shop.defs.resources["key_provider"].signing_key("code-approval"))
    trusted = {public_key_b64(k) for k in shop.trust.trusted_approver_keys(POWER)}
    assert insider in {r["public_key"] for r in shop.trust._approvers.records()}
    assert trusted == {public_key_b64(shop.reviewer_key(POWER))}
