"""Calibrated limits: the stated false-alarm rate holds at any sample size, and real shifts still fail."""

import numpy as np
import pytest
from scipy.stats import binom

from domain.distribution import (
    DEFAULT_FALSE_ALARM_RATE,
    design_effect,
    histogram_shift,
    mean_shift,
    share_shift,
)

BINS = {str(i): 0.1 for i in range(10)}


def _shares(values: np.ndarray) -> dict[str, float]:
    counts = np.bincount(values, minlength=10)
    return {str(i): c / values.size for i, c in enumerate(counts)}


@pytest.mark.parametrize("n", [50, 5_000])
def test_clean_windows_fail_at_about_the_stated_rate_whatever_their_size(n):
    rng = np.random.default_rng(n)
    alarms = sum(
        not histogram_shift(
            "clean",
            _shares(rng.integers(0, 10, n)),
            n,
            _shares(rng.integers(0, 10, n)),
            n,
            false_alarm_rate=0.1,
        ).passed
        for _ in range(150)
    )
    assert 4 <= alarms <= 30, alarms  # 15 expected; a fixed PSI limit would give ~all or ~none


def test_the_rate_is_shared_by_the_features_a_check_tests_at_once():
    one = histogram_shift("f", BINS, 1_000, BINS, 1_000)
    five = histogram_shift("f", BINS, 1_000, BINS, 1_000, tests=5)
    assert five.limit > one.limit and five.tests == 5


def test_the_same_shift_is_noise_in_a_small_window_and_an_attack_in_a_large_one():
    moved = {str(i): (0.13 if i < 5 else 0.07) for i in range(10)}
    assert histogram_shift("f", BINS, 100, moved, 100).passed
    large = histogram_shift("f", BINS, 20_000, moved, 20_000)
    assert not large.passed and large.p_value < 0.001
    assert large.metadata()["current_n"] == 20_000 and large.metadata()["limit"] == large.limit


def test_a_category_the_reference_never_saw_fails_when_it_is_more_than_a_trace():
    unseen = {**{k: v * 0.9 for k, v in BINS.items()}, "new": 0.1}
    assert not histogram_shift("f", BINS, 10_000, unseen, 10_000).passed


def test_verdicts_are_reproducible():
    first = share_shift("label", 0.3, 800, 0.36, 900)
    assert first == share_shift("label", 0.3, 800, 0.36, 900)


def test_one_sided_share_tests_only_fail_on_a_rise():
    assert share_shift("issues", 0.05, 2_000, 0.02, 2_000, one_sided=True).passed
    assert not share_shift("issues", 0.05, 2_000, 0.02, 2_000).passed
    assert not share_shift("issues", 0.05, 2_000, 0.08, 2_000, one_sided=True).passed


@pytest.mark.parametrize("one_sided", [True, False])
def test_a_shares_limit_and_p_value_are_what_binomial_draws_show(one_sided):
    """The share test's null is computed, not drawn: 400,000 pairs of binomial windows agree with it."""
    reference, reference_n, current_n, rise = 0.1, 1_200, 300, 0.04
    test = share_shift(
        "s", reference, reference_n, reference + rise, current_n, one_sided=one_sided, false_alarm_rate=0.01
    )
    pooled = reference * reference_n + (reference + rise) * current_n
    p = (pooled + 0.5) / (reference_n + current_n + 1)  # the two windows' common share, smoothed
    rng = np.random.default_rng(3)
    draws = (
        rng.binomial(current_n, p, 400_000) / current_n - rng.binomial(reference_n, p, 400_000) / reference_n
    )
    statistic = draws if one_sided else np.abs(draws)
    assert 0.005 < (statistic > test.limit).mean() <= 0.01  # the limit holds the rate, and not far inside it
    assert abs((statistic >= rise - 1e-12).mean() - test.p_value) < 4 * np.sqrt(test.p_value / 400_000)


@pytest.mark.parametrize(
    ("share", "reference_n", "current_n", "tests"),
    [
        (0.25, 50, 52, 60_000),
        (0.3, 30, 30, 6_000),
        (0.1, 50, 50, 60_000),
        (0.5, 20, 200, 1),
        (0.05, 400, 200, 100),
    ],
)
def test_a_share_test_false_alarms_at_most_at_its_stated_rate_whatever_the_reference_drew(
    share, reference_n, current_n, tests
):
    """Exact: every pair of windows drawn at one true share, weighted by its probability.

    A null taken at the reference's own share alone false-alarmed 600 to 20,000 times the
    stated rate on such counts: a reference that came out low made an ordinary window a push.
    """
    x, y = np.arange(reference_n + 1), np.arange(current_n + 1)
    px, py = binom.pmf(x, reference_n, share), binom.pmf(y, current_n, share)
    rate = DEFAULT_FALSE_ALARM_RATE / tests
    false_alarms = sum(
        px[i] * py[j]
        for i in x[px > 1e-15]
        for j in y[(py > 1e-15) & (y / current_n > i / reference_n)]
        if not share_shift(
            "s", i / reference_n, reference_n, j / current_n, current_n, one_sided=True, tests=tests
        ).passed
    )
    assert false_alarms <= rate, f"{false_alarms:.3g} against the stated {rate:.3g}"


def test_a_reference_that_saw_none_does_not_make_a_little_impossible():
    assert share_shift("rare", 0.0, 200, 1 / 200, 200, one_sided=True).passed
    assert not share_shift("rare", 0.0, 200, 0.1, 200, one_sided=True).passed


def test_impossible_arguments_are_refused():
    with pytest.raises(ValueError, match="values on both sides"):
        histogram_shift("f", BINS, 0, BINS, 10)
    with pytest.raises(ValueError, match="false_alarm_rate"):
        share_shift("f", 0.3, 10, 0.3, 10, false_alarm_rate=1.5)


def _clustered_windows(
    rng: np.random.Generator, patients: int, correlated: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per patient: how many studies (1-4) and how many show a lesion (30% of patients are ill)."""
    sizes = rng.integers(1, 5, patients)
    if correlated:
        positives = np.where(rng.random(patients) < 0.3, sizes, 0)  # a patient's studies share a diagnosis
    else:
        positives = rng.binomial(sizes, 0.3)
    return sizes, positives


def test_clustered_studies_are_worth_fewer_independent_ones_and_the_limit_holds_with_them():
    rng = np.random.default_rng(4)
    assert design_effect(*_clustered_windows(rng, 2_000, correlated=False)) == pytest.approx(1.0, abs=0.15)
    deff = design_effect(*_clustered_windows(rng, 2_000, correlated=True))
    assert 2.2 < deff < 3.2  # 1 + (mean studies per study's patient - 1): a patient's studies agree

    naive = corrected = 0
    for _ in range(200):
        reference, window = (_clustered_windows(rng, 150, correlated=True) for _ in range(2))
        shares = [p.sum() / s.sum() for s, p in (reference, window)]
        sizes = [int(s.sum()) for s, _ in (reference, window)]
        naive += not share_shift("c", shares[0], sizes[0], shares[1], sizes[1], false_alarm_rate=0.05).passed
        corrected += not share_shift(
            "c", shares[0], round(sizes[0] / deff), shares[1], round(sizes[1] / deff), false_alarm_rate=0.05
        ).passed
    assert naive > 30  # counting every study as independent: several times the stated 5%
    assert corrected <= 20, corrected  # 10 expected


def test_a_design_effect_never_claims_more_precision_than_independent_cases():
    assert design_effect(np.array([1, 1, 1, 1]), np.array([0, 1, 0, 1])) == 1.0
    assert design_effect(np.array([2, 2]), np.array([1, 1])) == 1.0  # clusters disagree less than chance
    assert design_effect(np.array([3]), np.array([1])) == 1.0  # one cluster: nothing to estimate
    assert design_effect(np.array([2, 2]), np.array([0, 0])) == 1.0  # no variation at all


def _long_tailed(rng: np.random.Generator, n: int) -> np.ndarray:
    """Scores like a grader's doubt: mostly near 0, a few confident mistakes near 1."""
    return np.where(rng.random(n) < 0.03, rng.uniform(0.8, 1.0, n), rng.beta(0.5, 12, n))


@pytest.mark.parametrize("n", [80, 600])  # small and long-tailed; large enough for the CLT
def test_a_mean_of_a_long_tailed_score_false_alarms_at_about_the_stated_rate(n):
    rng = np.random.default_rng(n + 1)
    alarms = sum(
        not mean_shift(
            "doubt", _long_tailed(rng, n), n, _long_tailed(rng, n).mean(), n, false_alarm_rate=0.1
        ).passed
        for _ in range(150)
    )
    assert 4 <= alarms <= 30, alarms  # 15 expected


def test_a_mean_shift_fails_only_on_a_rise_beyond_the_noise_of_both_sizes():
    rng = np.random.default_rng(2)
    reference = _long_tailed(rng, 1_000)
    poisoned = np.concatenate([_long_tailed(rng, 950), rng.uniform(0.5, 0.9, 50)])  # 5% of studies doubted
    assert not mean_shift("doubt", reference, 1_000, poisoned.mean(), poisoned.size).passed
    assert mean_shift("doubt", reference, 1_000, reference.mean() - 0.05, 1_000).passed  # less doubt is fine
    assert mean_shift(
        "doubt", reference, 1_000, poisoned.mean(), 60
    ).passed  # the same mean on 60 studies is noise


def test_the_design_effect_of_a_score_counts_patients_whose_studies_score_alike():
    rng = np.random.default_rng(6)
    sizes = rng.integers(1, 5, 2_000)
    independent = [rng.random(s) for s in sizes]
    shared = [np.full(s, rng.random()) for s in sizes]  # one score per patient, repeated
    for scores, expected in ((independent, 1.0), (shared, 3.0)):  # 3: studies per study's patient
        values = np.concatenate(scores)
        deff = design_effect(sizes, np.array([s.sum() for s in scores]), float(values.var()))
        assert deff == pytest.approx(expected, abs=0.35)
