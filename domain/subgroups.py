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

from domain.distribution import CalibratedTest, share_shift


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
) -> tuple[list[SubgroupShift], list[str]]:
    """Each subgroup's calibrated share test, and the subgroups the reference has no share for."""
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
                reference[column][value]["n"],
                stats["positive_share"],
                stats["n"],
                tests=len(cells),
                false_alarm_rate=false_alarm_rate,
            ),
        )
        for column, value, stats in cells
    ]
    return shifts, unseen
