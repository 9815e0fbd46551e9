"""The retraining condition, evaluated tick by tick as the daemon does, on two stand-in assets.

New feedback lands in one run and its blocking check reports later (another
step, or the daemon ticks while the run is still in progress): the retraining
must still start once the check passes, and never while it fails.
"""

from __future__ import annotations

import dagster as dg
import pytest

from assets.ecommerce.modeling import RETRAIN


class Ticks:
    """Stand-ins for the feedback table (with one blocking check) and the training set under RETRAIN."""

    def __init__(self) -> None:
        self.check_passes = True

        @dg.asset
        def feedback() -> int:
            return 1

        @dg.asset_check(asset=feedback, blocking=True)
        def feedback_is_valid() -> dg.AssetCheckResult:
            return dg.AssetCheckResult(passed=self.check_passes)

        @dg.asset(deps=[feedback], automation_condition=RETRAIN)
        def training() -> int:
            return 2

        self.feedback, self.check = feedback, feedback_is_valid
        self.defs = dg.Definitions(assets=[feedback, training], asset_checks=[feedback_is_valid])
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursor = None

    def land(self, checked: bool, passes: bool = True) -> None:
        """New feedback, with its check run in the same run or not at all."""
        self.check_passes = passes
        selection = dg.AssetSelection.assets(self.feedback)
        dg.materialize(
            [self.feedback, self.check],
            instance=self.instance,
            selection=selection if checked else selection.without_checks(),
            raise_on_error=False,
        )

    def check_later(self, passes: bool = True) -> None:
        self.check_passes = passes
        checks_only = dg.AssetSelection.checks(self.check)
        dg.materialize([self.feedback, self.check], instance=self.instance, selection=checks_only)

    def tick(self) -> int:
        """One evaluation of the conditions: how many retrainings it requests."""
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        return result.total_requested


@pytest.fixture
def ticks() -> Ticks:
    ticks = Ticks()
    assert ticks.tick() == 0  # nothing has landed: no retraining on the first evaluation
    return ticks


def test_feedback_whose_check_passes_in_the_same_run_retrains_once(ticks):
    ticks.land(checked=True)
    assert [ticks.tick(), ticks.tick()] == [1, 0]


def test_feedback_seen_before_its_check_reported_still_retrains_once_the_check_passes(ticks):
    ticks.land(checked=False)
    assert ticks.tick() == 0
    ticks.check_later(passes=True)
    assert [ticks.tick(), ticks.tick()] == [1, 0]


def test_feedback_whose_blocking_check_failed_never_retrains_until_clean_feedback_passes(ticks):
    ticks.land(checked=True, passes=False)
    assert [ticks.tick(), ticks.tick(), ticks.tick()] == [0, 0, 0]
    ticks.land(checked=True, passes=True)
    assert [ticks.tick(), ticks.tick()] == [1, 0]
