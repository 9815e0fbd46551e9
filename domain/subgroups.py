"""Label shares per subgroup (modality, body part, category, region…) against the trusted reference.

An attacker who flips the labels of one subgroup only — lesion studies of one
modality reported as normal — barely moves the overall share, yet teaches
the model to miss exactly that subgroup. Each subgroup's share is therefore
tested on its own, at its own size, with the false-alarm rate split over
every subgroup tested (`domain.distribution`). The subgroups are columns an
adopter names; a subgroup the reference never saw is reported, not tested
(the mix and out-of-distribution checks own that question).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from scipy import stats

from domain.distribution import CalibratedTest, effective_size, paired_drop_lower_bound, share_shift


def label_shares(frame: pd.DataFrame, columns: Sequence[str], label: str = "label") -> dict[str, dict]:
    """`{column: {value: {"n": rows, "positive_share": share}}}` for each subgroup column of `frame`."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"subgroup columns {missing} are not in the table (it has {sorted(frame.columns)})")
    shares: dict[str, dict] = {}
    for column in columns:
        grouped = frame.groupby(frame[column].astype(str))[label].agg(["size", "mean"])
        shares[column] = {
            str(value): {"n": int(row["size"]), "positive_share": float(row["mean"])}
            for value, row in grouped.iterrows()
        }
    return shares


@dataclass(frozen=True)
class SubgroupShift:
    """One subgroup's label share against the reference's."""

    column: str
    value: str
    reference_share: float
    share: float
    test: CalibratedTest

    @property
    def name(self) -> str:
        return f"{self.column}={self.value}"


def label_share_shifts(
    reference: dict[str, dict],
    frame: pd.DataFrame,
    columns: Sequence[str],
    *,
    false_alarm_rate: float,
    label: str = "label",
    one_sided: bool = False,
    design_effect: float = 1.0,
) -> tuple[list[SubgroupShift], list[str]]:
    """Each subgroup's calibrated share test, and the subgroups the reference has no share for.

    `one_sided` when only a rise is a threat; `design_effect` counts both sides'
    rows as the independent cases they are worth (a patient's studies move together).
    """
    unknown = [c for c in columns if c not in reference]
    if unknown:
        raise KeyError(
            f"the trusted reference has no label shares for {unknown} (it has {sorted(reference)}); "
            "rebuild the baseline with these subgroup columns or remove them from the configuration"
        )
    current = label_shares(frame, columns, label)
    cells = [(c, v, stats) for c in columns for v, stats in current[c].items() if v in reference[c]]
    unseen = [f"{c}={v}" for c in columns for v in current[c] if v not in reference[c]]
    shifts = [
        SubgroupShift(
            column,
            value,
            reference[column][value]["positive_share"],
            stats["positive_share"],
            share_shift(
                f"subgroup:{column}={value}",
                reference[column][value]["positive_share"],
                effective_size(reference[column][value]["n"], design_effect),
                stats["positive_share"],
                effective_size(stats["n"], design_effect),
                one_sided=one_sided,
                tests=len(cells),
                false_alarm_rate=false_alarm_rate,
            ),
        )
        for column, value, stats in cells
    ]
    return shifts, unseen


def rate_upper_bound(successes: int, n: int, false_alarm_rate: float) -> float:
    """One-sided Clopper-Pearson upper bound of a rate (the true rate is above it with
    probability `false_alarm_rate` at most); 1 when there is nothing to measure."""
    if n < 1 or successes >= n:
        return 1.0
    return float(stats.beta.ppf(1 - false_alarm_rate, successes + 1, n - successes))


def _subgroups(cases: pd.DataFrame, columns: Sequence[str]) -> list[tuple[str, str, pd.DataFrame]]:
    """`(column, value, rows)` for every value of every subgroup column, values compared as text."""
    return [(c, str(v), rows) for c in columns for v, rows in cases.groupby(cases[c].astype(str))]


@dataclass(frozen=True)
class SubgroupRates:
    """A model's sensitivity and specificity on one subgroup of held-out cases, with their upper bounds."""

    column: str
    value: str
    positives: int
    sensitivity: float | None  # None: no case of that class in the subgroup
    sensitivity_upper: float
    negatives: int
    specificity: float | None
    specificity_upper: float

    @property
    def name(self) -> str:
        return f"{self.column}={self.value}"


def subgroup_rates(
    frame: pd.DataFrame,
    predicted: Sequence[bool],
    columns: Sequence[str],
    *,
    false_alarm_rate: float,
    label: str = "label",
) -> list[SubgroupRates]:
    """Sensitivity and specificity per subgroup of `frame` (held-out cases with their true `label`).

    The upper bounds share `false_alarm_rate` over every rate tested (two per
    subgroup), so "the upper bound is below the clinical minimum" is evidence
    the model falls short on that subgroup, not the noise of a few dozen cases.
    """
    cases = frame.assign(_predicted=list(predicted))
    groups = _subgroups(cases, columns)
    rate = false_alarm_rate / max(2 * len(groups), 1)
    rates = []
    for column, value, rows in groups:
        positive, negative = rows[rows[label] == 1], rows[rows[label] == 0]
        found, cleared = int(positive["_predicted"].sum()), int((~negative["_predicted"].astype(bool)).sum())
        rates.append(
            SubgroupRates(
                column,
                value,
                len(positive),
                found / len(positive) if len(positive) else None,
                rate_upper_bound(found, len(positive), rate),
                len(negative),
                cleared / len(negative) if len(negative) else None,
                rate_upper_bound(cleared, len(negative), rate),
            )
        )
    return rates


@dataclass(frozen=True)
class SubgroupRegression:
    """How much of one subgroup's sensitivity or specificity a challenger lost against the champion,
    on the same held-out cases."""

    column: str
    value: str
    rate: str  # "sensitivity" (the subgroup's lesions) or "specificity" (its normals)
    cases: int
    champion: float
    challenger: float
    lost: int  # cases the champion got right and the challenger wrong
    gained: int
    drop_lower_bound: float

    @property
    def name(self) -> str:
        return f"{self.column}={self.value}:{self.rate}"


def subgroup_regressions(
    frame: pd.DataFrame,
    champion: Sequence[bool],
    challenger: Sequence[bool],
    columns: Sequence[str],
    *,
    false_alarm_rate: float,
    label: str = "label",
) -> list[SubgroupRegression]:
    """Each subgroup's sensitivity and specificity drop from champion to challenger, paired by case.

    Both models answer the same held-out cases, so the drop is judged on the
    cases one got right and the other wrong (`paired_drop_lower_bound`), with
    `false_alarm_rate` split over every rate tested: a bound above a tolerance
    is evidence the challenger fails that subgroup, not the churn two trainings
    show on a few dozen cases. A subgroup with no case of a class has no rate for it.
    """
    cases = frame.assign(_champion=list(champion), _challenger=list(challenger))
    groups = _subgroups(cases, columns)
    tested = [
        (column, value, rate, rows[rows[label] == positive])
        for column, value, rows in groups
        for rate, positive in (("sensitivity", 1), ("specificity", 0))
        if (rows[label] == positive).any()
    ]
    regressions = []
    for column, value, rate, rows in tested:
        truth = rows[label].to_numpy() == 1
        before, after = rows["_champion"].to_numpy(bool) == truth, rows["_challenger"].to_numpy(bool) == truth
        lost, gained = int((before & ~after).sum()), int((~before & after).sum())
        name = f"champion:{column}={value}:{rate}"
        regressions.append(
            SubgroupRegression(
                column,
                value,
                rate,
                len(rows),
                float(before.mean()),
                float(after.mean()),
                lost,
                gained,
                paired_drop_lower_bound(
                    name, lost, gained, len(rows), false_alarm_rate=false_alarm_rate / len(tested)
                ),
            )
        )
    return regressions
