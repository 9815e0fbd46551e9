"""Drift against the trusted baseline: PSI/KS levels, the plot and the check result."""

from __future__ import annotations

import base64
import math
import re

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from assets.checks.drift import (
    DriftThresholds,
    drift_check_result,
    drift_plot_markdown,
    drift_report,
    ks,
    psi_categorical,
    psi_numeric,
)
from domain.distribution import psi

N = 5000
NUMERIC = ["basket_value", "dwell_seconds", "rating"]
CATEGORICAL = ["event_type"]
EVENT_SHARES = {"view": 0.5, "add_to_cart": 0.3, "purchase": 0.2}


def window(seed: int, shift_sd: float = 0.0, events: dict[str, float] | None = None) -> pd.DataFrame:
    """A synthetic feature window; `shift_sd` moves basket_value's mean by that many sd."""
    rng = np.random.default_rng(seed)
    shares = events or EVENT_SHARES
    return pd.DataFrame(
        {
            "basket_value": rng.normal(50.0 + 10.0 * shift_sd, 10.0, N),
            "dwell_seconds": rng.exponential(30.0, N),
            "rating": rng.integers(1, 6, N),
            "event_type": rng.choice(list(shares), N, p=list(shares.values())),
        }
    )


@pytest.fixture(scope="module")
def baseline() -> pd.DataFrame:
    return window(seed=0)


def report_for(baseline: pd.DataFrame, current: pd.DataFrame):
    return drift_report(baseline, current, NUMERIC, CATEGORICAL, DriftThresholds())


def test_identical_samples_do_not_drift(baseline: pd.DataFrame) -> None:
    report = report_for(baseline, baseline.copy())
    assert report.level == "ok"
    for feature in report.features:
        assert feature.psi == pytest.approx(0.0, abs=1e-12)
        assert feature.level == "ok"
    assert report.feature("basket_value").ks_statistic == pytest.approx(0.0)


def test_a_fresh_sample_of_the_same_distribution_is_ok(baseline: pd.DataFrame) -> None:
    report = report_for(baseline, window(seed=1))
    assert report.level == "ok", report.to_dict()
    assert report.drifted == []


def test_one_sd_mean_shift_is_an_error(baseline: pd.DataFrame) -> None:
    report = report_for(baseline, window(seed=1, shift_sd=1.0))
    feature = report.feature("basket_value")
    assert feature.psi >= 0.25 and feature.ks_statistic >= 0.2
    assert feature.level == "error" and report.level == "error"
    assert report.drifted == ["basket_value"]
    assert report.feature("dwell_seconds").level == "ok"


def test_a_small_shift_is_a_warning(baseline: pd.DataFrame) -> None:
    report = report_for(baseline, window(seed=1, shift_sd=0.4))
    feature = report.feature("basket_value")
    assert 0.1 <= feature.psi < 0.25
    assert 0.1 <= feature.ks_statistic < 0.2
    assert feature.level == "warn" and report.level == "warn"


def test_categorical_shift_is_detected(baseline: pd.DataFrame) -> None:
    mild = report_for(baseline, window(seed=1, events={"view": 0.3, "add_to_cart": 0.3, "purchase": 0.4}))
    assert mild.feature("event_type").level == "warn"
    large = report_for(baseline, window(seed=1, events={"view": 0.2, "add_to_cart": 0.3, "purchase": 0.5}))
    event = large.feature("event_type")
    assert event.level == "error" and event.ks_statistic is None
    assert large.level == "error"


def test_a_new_category_and_missing_values_count_as_drift(baseline: pd.DataFrame) -> None:
    current = window(seed=1)
    current.loc[: N // 5, "event_type"] = "refund"
    current.loc[N // 5 : N // 2, "event_type"] = None
    assert report_for(baseline, current).feature("event_type").level == "error"


def test_discrete_numeric_feature_is_compared_value_by_value(baseline: pd.DataFrame) -> None:
    current = window(seed=1)
    current["rating"] = np.random.default_rng(2).choice([4, 5], N)  # 5-star flood
    rating = report_for(baseline, current).feature("rating")
    assert rating.level == "error" and rating.psi > 1.0


def test_values_outside_the_baseline_range_land_in_the_outer_bins() -> None:
    expected = np.linspace(0.0, 1.0, 1000)
    assert psi_numeric(expected, expected + 10.0) > 5.0
    assert psi_numeric(expected, np.concatenate([expected, [np.nan, np.inf]])) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        psi_numeric(expected, np.array([np.nan]))


def test_psi_categorical_reuses_the_share_psi() -> None:
    expected, actual = {"a": 0.5, "b": 0.5}, {"a": 0.9, "b": 0.1}
    hand = 0.4 * math.log(0.9 / 0.5) + (-0.4) * math.log(0.1 / 0.5)
    assert psi_categorical(expected, actual) == pytest.approx(hand)
    assert psi_categorical(expected, actual) == psi(expected, actual)
    assert psi_categorical({"a": 1.0}, {"b": 1.0}) > 10  # disjoint: floored, large, finite


def test_ks_is_scipys_two_sample_test(baseline: pd.DataFrame) -> None:
    current = window(seed=1, shift_sd=0.4)
    statistic, pvalue = ks(baseline["basket_value"].to_numpy(), current["basket_value"].to_numpy())
    reference = stats.ks_2samp(baseline["basket_value"], current["basket_value"])
    assert statistic == pytest.approx(reference.statistic) and pvalue == pytest.approx(reference.pvalue)
    assert pvalue < 1e-6


def test_missing_or_empty_features_fail_closed(baseline: pd.DataFrame) -> None:
    current = window(seed=1).drop(columns=["dwell_seconds"])
    current["basket_value"] = np.nan
    report = report_for(baseline, current)
    assert report.feature("dwell_seconds").level == "error"
    assert report.feature("dwell_seconds").note == "column missing"
    assert report.feature("basket_value").note == "no finite values"
    assert report.to_dict()["features"]["basket_value"]["psi"] is None


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValueError):
        DriftThresholds(warn_psi=0.3, error_psi=0.2)


def test_plot_markdown_embeds_a_small_png(baseline: pd.DataFrame) -> None:
    current = window(seed=1, shift_sd=1.0, events={"view": 0.2, "add_to_cart": 0.3, "purchase": 0.5})
    report = report_for(baseline, current)
    markdown = drift_plot_markdown(report, baseline, current)
    match = re.search(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert match, markdown[:300]
    png = base64.b64decode(match.group(1))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(markdown) < 60_000
    for name in NUMERIC + CATEGORICAL:
        assert f"| {name} |" in markdown
    assert "**Drift level: error**" in markdown


def test_check_result_fails_at_error_and_warns_at_warn(baseline: pd.DataFrame) -> None:
    error = drift_check_result(report_for(baseline, window(seed=1, shift_sd=1.0)))
    assert error.passed is False
    assert error.severity == dg.AssetCheckSeverity.ERROR
    features = error.metadata["features"].value
    assert features["basket_value"]["level"] == "error"
    assert features["basket_value"]["psi"] >= 0.25 and features["basket_value"]["ks_statistic"] >= 0.2
    assert error.metadata["thresholds"].value == {
        "warn_psi": 0.1,
        "error_psi": 0.25,
        "warn_ks": 0.1,
        "error_ks": 0.2,
    }

    warn = drift_check_result(report_for(baseline, window(seed=1, shift_sd=0.4)))
    assert warn.passed is True
    assert warn.severity == dg.AssetCheckSeverity.WARN
    assert warn.metadata["level"].value == "warn"

    ok = drift_check_result(report_for(baseline, window(seed=1)))
    assert ok.passed is True and ok.metadata["level"].value == "ok"


def test_check_result_runs_inside_a_dagster_asset_check(baseline: pd.DataFrame) -> None:
    current = window(seed=1, shift_sd=1.0)

    @dg.asset
    def feature_window() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"rows": len(current)})

    @dg.asset_check(asset=feature_window, blocking=True)
    def feature_drift() -> dg.AssetCheckResult:
        report = report_for(baseline, current)
        return drift_check_result(report, plot_markdown=drift_plot_markdown(report, baseline, current))

    result = dg.materialize([feature_window, feature_drift], raise_on_error=False)
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed is False
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "data:image/png;base64," in evaluation.metadata["drift_plot"].value
