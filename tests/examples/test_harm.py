"""Harm in the scorecard: what an attack achieves once the checks that caught it are switched off."""

from dataclasses import replace
from functools import partial

import numpy as np
import pytest

from examples.attacks.harm import paired_effect
from examples.attacks.lab import Outcome, run_scenario
from examples.attacks.scorecard import harm_text
from examples.ecommerce.attacks import data_poisoning
from examples.ecommerce.attacks.pipeline import pipeline


def test_a_paired_effect_counts_only_what_the_attack_changed_beyond_chance():
    rng = np.random.default_rng(0)
    before = rng.random(400) < 0.8
    churn = before.copy()  # two trainings differ on a few cases each way: the same quality
    churn[rng.choice(np.flatnonzero(before), 12, replace=False)] = False
    churn[rng.choice(np.flatnonzero(~before), 9, replace=False)] = True
    assert not paired_effect("noise", before, churn).harmful
    hidden = before & (rng.random(400) < 0.3)  # the attack turns a third of the good cases bad
    effect = paired_effect("attack", before, before & ~hidden)
    assert effect.harmful and effect.value == pytest.approx(hidden.sum() / 400)
    assert 0 < effect.lower_bound < effect.value and effect.cases == 400
    with pytest.raises(ValueError, match="one verdict per case"):
        paired_effect("x", before, before[:10])


def _outcome(detected: bool, harm: dict | None) -> Outcome:
    outcome = Outcome("s", "a", "e", detected, None, None, [], 0.0, harm=harm)
    outcome.judge()
    return outcome


def test_every_row_gets_an_outcome_from_detection_and_harm():
    harmful = {
        "measure": "m",
        "switched_off": [],
        "value": 0.2,
        "lower_bound": 0.1,
        "cases": 50,
        "harmful": True,
    }
    harmless = harmful | {"value": 0.01, "lower_bound": 0.0, "harmful": False}
    assert _outcome(True, harmful).outcome == "detected"
    assert _outcome(False, harmful).outcome == "missed-harmful"
    assert _outcome(False, harmless).outcome == "missed-harmless"
    assert _outcome(False, None).outcome == "missed"
    assert _outcome(False, {"measure": "m", "switched_off": [], "unmeasured": "x"}).outcome == "missed"
    assert harm_text(harmful) == "+20.0% (at least +10.0%) m, 50 cases: harmful"


@pytest.mark.slow
def test_a_shilling_campaign_is_caught_and_its_harm_measured_with_those_checks_off(tmp_path):
    """The lab's 3% campaign is harmless once past the review checks (the confidence cap holds);
    a 20% campaign past them pushes the item to real users, and the harm figure says so."""
    lab = run_scenario(data_poisoning.SCENARIO, pipeline, tmp_path, measure_harm=True)
    assert lab.outcome == "detected" and lab.check == "product_reviews:new_accounts_within_baseline"
    assert "product_reviews:new_accounts_within_baseline" in lab.harm["switched_off"]
    assert lab.harm["cases"] > 300 and not lab.harm["harmful"]

    loud = replace(data_poisoning.SCENARIO, mount=partial(data_poisoning.mount, share=0.2))
    strong = run_scenario(loud, pipeline, tmp_path / "strong", measure_harm=True)
    assert strong.detected and strong.harm["harmful"], strong.harm
    assert strong.harm["lower_bound"] > 0.05
