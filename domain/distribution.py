"""Distribution checks: a collected window against the trusted baseline.

Drift is always measured against the baseline a human trusted, never
against the previous batch, so an attacker cannot walk the distribution
somewhere else in steps that each look small.

Limits are calibrated to the samples at hand rather than fixed: the same
PSI is noise between two windows of 60 items and a large shift between two
windows of 100,000 interactions. A calibrated test draws the statistic's null
distribution from the reference itself (both sides sampled from the
reference's shares at their own sizes), and fails when the observed value is
beyond the quantile that a clean window exceeds with probability
`false_alarm_rate` — split over the `tests` a check makes at once
(Bonferroni), so a check over five features still false-alarms at the stated
rate, not five times it. The null is drawn from a generator seeded by the
check's name, so the same data always gives the same verdict. A share's
null (`share_shift`) is not drawn but computed exactly, at the two windows'
pooled share: with many tests at once, the limit lies further out than
20,000 draws can resolve.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom

DEFAULT_FALSE_ALARM_RATE = 0.001
NULL_DRAWS = 20_000
SHARE_FLOOR = 1e-4  # an empty bin must not make PSI infinite
_COUNT_TOLERANCE = 1e-9  # counts computed from shares in floating point


def psi(expected: dict[str, float], actual: dict[str, float], floor: float = SHARE_FLOOR) -> float:
    """Population stability index between two categorical share tables.

    Below 0.1 is usually read as stable, 0.1-0.25 as a moderate shift,
    above 0.25 as a large one — rules of thumb that ignore sample size; the
    calibrated tests below do not.
    """
    keys = sorted(set(expected) | set(actual))
    e = np.array([max(expected.get(k, 0.0), floor) for k in keys])
    a = np.array([max(actual.get(k, 0.0), floor) for k in keys])
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class CalibratedTest:
    """One statistic against the limit its null distribution gives at these sample sizes."""

    statistic: float
    limit: float
    p_value: float
    reference_n: int
    current_n: int
    null_median: float
    null_p99: float
    false_alarm_rate: float
    tests: int

    @property
    def passed(self) -> bool:
        return self.statistic <= self.limit

    def metadata(self) -> dict[str, float | int]:
        """Flat numbers for a check's metadata (the UI plots each one's history)."""
        return {
            "statistic": self.statistic,
            "limit": self.limit,
            "p_value": self.p_value,
            "reference_n": self.reference_n,
            "current_n": self.current_n,
            "null_median": self.null_median,
            "null_p99": self.null_p99,
            "false_alarm_rate": self.false_alarm_rate,
            "tests": self.tests,
        }


def _generator(name: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little"))


def _require_rate(false_alarm_rate: float, tests: int) -> None:
    if not 0 < false_alarm_rate < 1 or tests < 1:
        raise ValueError("a calibrated test needs 0 < false_alarm_rate < 1 and tests >= 1")


def _calibrate(
    observed: float, null: np.ndarray, reference_n: int, current_n: int, false_alarm_rate: float, tests: int
) -> CalibratedTest:
    _require_rate(false_alarm_rate, tests)
    limit = float(np.quantile(null, 1 - false_alarm_rate / tests, method="higher"))
    return CalibratedTest(
        statistic=float(observed),
        limit=limit,
        p_value=float((1 + np.count_nonzero(null >= observed)) / (null.size + 1)),
        reference_n=int(reference_n),
        current_n=int(current_n),
        null_median=float(np.median(null)),
        null_p99=float(np.quantile(null, 0.99)),
        false_alarm_rate=false_alarm_rate,
        tests=tests,
    )


def _smoothed(counts: np.ndarray, n: int, outcomes: int) -> np.ndarray:
    """Shares with half a count added to every outcome (Jeffreys): a reference that saw
    none of something in a small sample does not make seeing a little of it impossible."""
    return (counts + 0.5) / (n + 0.5 * outcomes)


def _psi_rows(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    e, a = np.maximum(expected, SHARE_FLOOR), np.maximum(actual, SHARE_FLOOR)
    return np.sum((a - e) * np.log(a / e), axis=-1)


def histogram_shift(
    name: str,
    reference: dict[str, float],
    reference_n: int,
    current: dict[str, float],
    current_n: int,
    *,
    tests: int = 1,
    false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
) -> CalibratedTest:
    """PSI of `current` against `reference` (share tables over the same bins), calibrated.

    The null: two windows of `reference_n` and `current_n` values drawn from
    the reference's shares, compared with the same PSI. A bin the reference
    never saw has no null mass, so a current window that fills it fails.
    """
    if reference_n < 1 or current_n < 1:
        raise ValueError(f"{name}: a calibrated test needs values on both sides")
    keys = sorted(set(reference) | set(current))
    counts = np.array([reference.get(k, 0.0) for k in keys]) / sum(reference.values()) * reference_n
    shares = _smoothed(counts, reference_n, len(keys))
    rng = _generator(name)
    null = _psi_rows(
        rng.multinomial(reference_n, shares, size=NULL_DRAWS) / reference_n,
        rng.multinomial(current_n, shares, size=NULL_DRAWS) / current_n,
    )
    observed = psi(reference, current)
    return _calibrate(observed, null, reference_n, current_n, false_alarm_rate, tests)


def share_shift(
    name: str,
    reference: float,
    reference_n: int,
    current: float,
    current_n: int,
    *,
    one_sided: bool = False,
    tests: int = 1,
    false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
) -> CalibratedTest:
    """How far a share (label balance, new accounts, label issues) moved from the reference's, calibrated.

    The statistic is `current - reference` when only a rise is a threat
    (`one_sided`), else its absolute value; its null is that of two binomial
    shares at one common share and the two sizes, computed exactly, so
    the limit holds the stated rate however many tests share it (a check over
    180 item shares drew its limits from 20,000 draws and could false-alarm at
    0.9% rather than 0.1%).

    Both binomials are taken at the two windows' pooled share, the estimate of
    the share they have in common if nothing moved. Taking the reference's own
    share instead treats a reference that happened to come out low as the
    truth: with a few dozen users per item, 2 buyers of 50 in the reference
    against 16 of 52 in the window looked like a push at p < 1e-8, and over
    20,000 items such an unlucky reference is certain (the clean 10M-event shop
    was stopped). At the pooled share the exact false-alarm rate stays at or
    under the stated one, tens to thousands of times lower than before on
    small counts (`tests/domain/test_distribution.py`).
    """
    if reference_n < 1 or current_n < 1:
        raise ValueError(f"{name}: a calibrated test needs values on both sides")
    _require_rate(false_alarm_rate, tests)
    pooled = reference * reference_n + current * current_n
    p = float(_smoothed(np.array([pooled]), reference_n + current_n, 2)[0])

    tails = [_DifferenceTail(p, current_n, reference_n)]
    if not one_sided:
        tails.append(_DifferenceTail(p, reference_n, current_n))

    def exceeds(d: np.ndarray, *, strictly: bool = True) -> np.ndarray:
        """P(statistic > d), or >= d when not `strictly`, for each d."""
        return sum(tail(d, strictly) for tail in tails)

    def quantiles(rates: np.ndarray) -> np.ndarray:
        """For each rate, the smallest d with P(statistic > d) <= rate: bisection (all rates at once)
        finds it to within the counts' tolerance, and one step past that tolerance puts a statistic
        equal to it on the passing side."""
        low, high = np.full(len(rates), -1.0), np.full(len(rates), 1.0)
        for _ in range(60):
            middle = (low + high) / 2
            below = exceeds(middle) <= rates
            low, high = np.where(below, low, middle), np.where(below, middle, high)
        return high + 2 * _COUNT_TOLERANCE / min(current_n, reference_n)

    observed = current - reference if one_sided else abs(current - reference)
    limit, median, p99 = quantiles(np.array([false_alarm_rate / tests, 0.5, 0.01]))
    return CalibratedTest(
        statistic=float(observed),
        limit=float(limit),
        p_value=float(exceeds(np.array([observed]), strictly=False)[0]),
        reference_n=int(reference_n),
        current_n=int(current_n),
        null_median=float(median),
        null_p99=float(p99),
        false_alarm_rate=false_alarm_rate,
        tests=tests,
    )


class _DifferenceTail:
    """P(X/n - Y/m > d) (or >= d), X ~ Binomial(n, p), Y ~ Binomial(m, p) independent, exactly.

    Both binomials' probabilities are computed once, where they are not
    negligible (`_likely`: each tail outside holds under 1e-30), so each `d`
    is one sum. Below that window P(X > k) is 1, above it 0.
    """

    def __init__(self, p: float, n: int, m: int) -> None:
        self.n, self.m = n, m
        first_y, last_y = _likely(m, p)
        self.y = np.arange(first_y, last_y + 1)
        self.weights = binom.pmf(self.y, m, p)
        self.first, last = _likely(n, p)
        # above[k - first + 1] = P(X > k), with 1 before the window and 0 after it
        self.above = np.concatenate([[1.0], binom.sf(np.arange(self.first, last + 1), n, p), [0.0]])

    def __call__(self, d: np.ndarray, strictly: bool) -> np.ndarray:
        x = self.n * (d[:, None] + self.y / self.m)
        # X > x is X > floor(x); X >= x is X > ceil(x) - 1 (with a tolerance for an integer x rounded off)
        k = np.floor(x + _COUNT_TOLERANCE) if strictly else np.ceil(x - _COUNT_TOLERANCE) - 1
        index = np.clip(k - self.first + 1, 0, len(self.above) - 1).astype(int)
        return (self.weights * self.above[index]).sum(axis=1)


def _likely(n: int, p: float, tail: float = 1e-30) -> tuple[int, int]:
    """(first, last): the counts of Binomial(n, p) outside which each tail holds less than `tail`.

    Starts 12 standard deviations out and widens while a tail is heavier (a small n * p
    has a Poisson-like tail that 12 standard deviations do not bound).
    """
    spread = 12 * np.sqrt(n * p * (1 - p)) + 1
    while True:
        first, last = max(0, int(n * p - spread)), min(n, int(n * p + spread))
        if (first == 0 or binom.cdf(first - 1, n, p) < tail) and (last == n or binom.sf(last, n, p) < tail):
            return first, last
        spread *= 2


def mean_shift(
    name: str,
    reference: np.ndarray,
    reference_n: int,
    current: float,
    current_n: int,
    *,
    weights: np.ndarray | None = None,
    tests: int = 1,
    false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
) -> CalibratedTest:
    """How far the mean of a score rose above the reference's (one-sided), calibrated by bootstrap.

    The null draws both windows, at their sizes, from the reference's values
    with replacement (each with its `weight`, equal by default), so a score
    with a long tail (a few confident mistakes) gets the wide limit it needs
    and no distribution is assumed.
    """
    values = np.asarray(reference, dtype=np.float64)
    if values.size < 1 or reference_n < 1 or current_n < 1:
        raise ValueError(f"{name}: a calibrated test needs values on both sides")
    p = None if weights is None else np.asarray(weights, dtype=np.float64) / np.sum(weights)
    rng = _generator(name)
    chunk = max(1, 4_000_000 // (reference_n + current_n))  # bounded memory at any size
    null = np.concatenate(
        [
            rng.choice(values, (size, current_n), p=p).mean(axis=1)
            - rng.choice(values, (size, reference_n), p=p).mean(axis=1)
            for size in np.diff(np.r_[np.arange(0, NULL_DRAWS, chunk), NULL_DRAWS])
        ]
    )
    expected = float(np.average(values, weights=p))
    return _calibrate(current - expected, null, reference_n, current_n, false_alarm_rate, tests)


def design_effect(
    cluster_sizes: np.ndarray, cluster_totals: np.ndarray, unit_variance: float | None = None
) -> float:
    """How much wider a mean's spread is because its cases come in correlated clusters (Kish).

    A patient's studies mostly share a diagnosis, so 500 studies of 380
    patients carry less evidence about the lesion share than 500 independent
    studies: the variance of the mean over clusters (ratio estimator),
    divided by its variance for independent cases at the same size. Cluster
    totals are counts of positives for a share (`unit_variance` then p(1-p))
    or sums of a score (`unit_variance` the score's variance over cases).
    Dividing a sample's size by this gives the size of independent sample
    with the same spread. Never below 1: clusters that disagree more than
    chance are not evidence of extra precision.
    """
    sizes, totals = np.asarray(cluster_sizes, float), np.asarray(cluster_totals, float)
    k, n = sizes.size, sizes.sum()
    if k < 2 or n < 1:
        return 1.0
    mean = totals.sum() / n
    variance = mean * (1 - mean) if unit_variance is None else unit_variance
    if variance <= 0:
        return 1.0
    clustered = k / (k - 1) * np.sum((totals - mean * sizes) ** 2) / n**2
    independent = variance / (n - 1)  # the same small-sample correction: single studies give exactly 1
    return float(max(1.0, clustered / independent))


def effective_size(n: int, design_effect: float) -> int:
    """How many independent cases `n` clustered cases are worth, at a cluster design effect."""
    return max(1, round(n / design_effect))


def paired_drop_lower_bound(
    name: str, lost: int, gained: int, n: int, *, false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE
) -> float:
    """The least accuracy drop the evidence supports: of `n` cases, `lost` became wrong and `gained` right.

    Bootstrap over the cases (each lost, gained or unchanged), seeded by
    `name`; the drop is above the returned bound with probability
    1 - `false_alarm_rate`. A gate that fails only when this bound exceeds
    its budget false-alarms at that rate on a model within it.
    """
    if n < 1 or lost < 0 or gained < 0 or lost + gained > n:
        raise ValueError(f"{name}: need 0 <= lost + gained <= n and n >= 1, got {lost}, {gained}, {n}")
    draws = _generator(name).multinomial(n, [lost / n, gained / n, 1 - (lost + gained) / n], size=NULL_DRAWS)
    return float(np.quantile((draws[:, 0] - draws[:, 1]) / n, false_alarm_rate, method="lower"))
