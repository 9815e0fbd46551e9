"""Data drift against the trusted baseline: PSI and KS per feature, with a plot.

The baseline is the data a human trusted (the reference window the model
was validated on), never the previous batch: feedback skewed a little per
cycle would otherwise never cross a threshold (MITRE ATLAS AML.T0020, OWASP
LLM04:2025 data and model poisoning through retraining).

Per numeric feature: the population stability index over quantile bins of
the baseline, and the two-sample Kolmogorov-Smirnov statistic. Per
categorical feature: PSI over category shares (missing values count as a
category of their own, so a burst of blanks is drift too). A feature's level
is the worse of its PSI and KS levels; the report's level is the worst
feature's. Thresholds are effect sizes, not p-values: with large windows
every tiny shift is "significant" (the p-value is still reported).

Only scipy and matplotlib are used (Evidently would do too; alibi-detect is
BSL-licensed and not used).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from domain.distribution import psi

__all__ = [
    "DriftReport",
    "DriftThresholds",
    "FeatureDrift",
    "drift_check_result",
    "drift_plot_markdown",
    "drift_report",
    "ks",
    "psi_categorical",
    "psi_numeric",
]

LEVELS = ("ok", "warn", "error")
MISSING = "<missing>"
EPSILON = 1e-4  # share floor: an empty bin must not make PSI infinite


def _finite(values: Iterable[Any]) -> np.ndarray:
    arr = pd.to_numeric(pd.Series(np.asarray(values).ravel()), errors="coerce").to_numpy(dtype=float)
    return arr[np.isfinite(arr)]


def _shares(counts: np.ndarray) -> dict[str, float]:
    total = counts.sum()
    return {str(i): float(c) / total for i, c in enumerate(counts)}


def psi_numeric(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float:
    """PSI of `actual` against `expected` (the baseline) over the baseline's quantile bins.

    Bin edges are the baseline's deciles (for `bins=10`), so each bin holds
    ~1/bins of the baseline; the outer bins are open, so values outside the
    baseline's range land in them. A feature with no more distinct baseline
    values than `bins` (ratings, small counts) is compared value by value.
    Empty bins are floored at 1e-4. Non-finite values are ignored.
    """
    e, a = _finite(expected), _finite(actual)
    if e.size == 0 or a.size == 0:
        raise ValueError("psi_numeric needs at least one finite value on each side")
    distinct = np.unique(e)
    if distinct.size <= bins:
        e_share = pd.Series(e).value_counts(normalize=True)
        a_share = pd.Series(a).value_counts(normalize=True)
        return psi(
            {repr(k): float(v) for k, v in e_share.items()},
            {repr(k): float(v) for k, v in a_share.items()},
            floor=EPSILON,
        )
    inner = np.unique(np.quantile(e, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    n_bins = inner.size + 1
    e_counts = np.bincount(np.searchsorted(inner, e, side="right"), minlength=n_bins)
    a_counts = np.bincount(np.searchsorted(inner, a, side="right"), minlength=n_bins)
    return psi(_shares(e_counts), _shares(a_counts), floor=EPSILON)


def psi_categorical(expected_shares: dict[str, float], actual_shares: dict[str, float]) -> float:
    """PSI between two category-share tables (categories absent on one side are floored)."""
    return psi(expected_shares, actual_shares, floor=EPSILON)


def ks(expected: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value (scipy), non-finite values ignored."""
    e, a = _finite(expected), _finite(actual)
    if e.size == 0 or a.size == 0:
        raise ValueError("ks needs at least one finite value on each side")
    result = stats.ks_2samp(e, a)
    return float(result.statistic), float(result.pvalue)


@dataclass(frozen=True)
class DriftThresholds:
    """PSI 0.1 / 0.25 are the usual 'moderate' / 'large' shift marks; KS on the statistic."""

    warn_psi: float = 0.1
    error_psi: float = 0.25
    warn_ks: float = 0.1
    error_ks: float = 0.2

    def __post_init__(self) -> None:
        if not (0 <= self.warn_psi <= self.error_psi and 0 <= self.warn_ks <= self.error_ks):
            raise ValueError("drift thresholds need 0 <= warn <= error")

    def psi_level(self, value: float) -> str:
        return _level(value, self.warn_psi, self.error_psi)

    def ks_level(self, value: float) -> str:
        return _level(value, self.warn_ks, self.error_ks)


def _level(value: float | None, warn: float, error: float) -> str:
    if value is None or not math.isfinite(value):
        return "error"  # fail closed: an unmeasurable feature is not "ok"
    if value >= error:
        return "error"
    if value >= warn:
        return "warn"
    return "ok"


def _worst(levels: Iterable[str]) -> str:
    return max(levels, key=LEVELS.index, default="ok")


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    kind: str  # "numeric" | "categorical"
    psi: float | None
    ks_statistic: float | None
    ks_pvalue: float | None
    level: str
    baseline_rows: int
    current_rows: int
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("psi", "ks_statistic", "ks_pvalue"):
            value = out[key]
            out[key] = round(value, 6) if value is not None and math.isfinite(value) else None
        return out


@dataclass(frozen=True)
class DriftReport:
    features: list[FeatureDrift]
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)
    baseline_rows: int = 0
    current_rows: int = 0

    @property
    def level(self) -> str:
        return _worst(f.level for f in self.features)

    def feature(self, name: str) -> FeatureDrift:
        for item in self.features:
            if item.name == name:
                return item
        raise KeyError(name)

    @property
    def drifted(self) -> list[str]:
        """Features at warn or error level, worst first."""
        ranked = sorted(self.features, key=lambda f: -LEVELS.index(f.level))
        return [f.name for f in ranked if f.level != "ok"]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftReport:
        """The report `to_dict` wrote (e.g. loaded back from the store)."""
        return cls(
            features=[FeatureDrift(**f) for f in data["features"].values()],
            thresholds=DriftThresholds(**data["thresholds"]),
            baseline_rows=data["baseline_rows"],
            current_rows=data["current_rows"],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "baseline_rows": self.baseline_rows,
            "current_rows": self.current_rows,
            "thresholds": asdict(self.thresholds),
            "drifted": self.drifted,
            "features": {f.name: f.to_dict() for f in self.features},
        }


def _category_shares(series: pd.Series) -> dict[str, float]:
    values = series.astype("object").where(series.notna(), MISSING).astype(str)
    return {str(k): float(v) for k, v in values.value_counts(normalize=True).items()}


def drift_report(
    baseline: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    thresholds: DriftThresholds | None = None,
) -> DriftReport:
    """Per-feature PSI/KS of `current` against the trusted `baseline`, with levels.

    A feature missing from `current`, or with no usable values on either
    side, is reported at error level (fail closed) with a note.
    """
    thresholds = thresholds or DriftThresholds()
    features: list[FeatureDrift] = []
    for name in numeric:
        features.append(_numeric_feature(name, baseline, current, thresholds))
    for name in categorical:
        features.append(_categorical_feature(name, baseline, current, thresholds))
    return DriftReport(features, thresholds, baseline_rows=len(baseline), current_rows=len(current))


def _unmeasurable(name: str, kind: str, b_rows: int, c_rows: int, note: str) -> FeatureDrift:
    return FeatureDrift(name, kind, None, None, None, "error", b_rows, c_rows, note)


def _numeric_feature(
    name: str, baseline: pd.DataFrame, current: pd.DataFrame, thresholds: DriftThresholds
) -> FeatureDrift:
    if name not in baseline.columns or name not in current.columns:
        return _unmeasurable(name, "numeric", len(baseline), len(current), "column missing")
    e, a = _finite(baseline[name]), _finite(current[name])
    if e.size == 0 or a.size == 0:
        return _unmeasurable(name, "numeric", int(e.size), int(a.size), "no finite values")
    value = psi_numeric(e, a)
    statistic, pvalue = ks(e, a)
    level = _worst((thresholds.psi_level(value), thresholds.ks_level(statistic)))
    return FeatureDrift(name, "numeric", value, statistic, pvalue, level, int(e.size), int(a.size))


def _categorical_feature(
    name: str, baseline: pd.DataFrame, current: pd.DataFrame, thresholds: DriftThresholds
) -> FeatureDrift:
    if name not in baseline.columns or name not in current.columns:
        return _unmeasurable(name, "categorical", len(baseline), len(current), "column missing")
    if len(baseline) == 0 or len(current) == 0:
        return _unmeasurable(name, "categorical", len(baseline), len(current), "no rows")
    value = psi_categorical(_category_shares(baseline[name]), _category_shares(current[name]))
    return FeatureDrift(
        name, "categorical", value, None, None, thresholds.psi_level(value), len(baseline), len(current)
    )


# -- presentation ---------------------------------------------------------------------

_COLOURS = {"ok": "#4c956c", "warn": "#f4a259", "error": "#bc4b51"}
_MAX_PANELS = 6  # feature panels drawn (the worst first); the PSI panel lists all


def drift_plot_markdown(report: DriftReport, baseline: pd.DataFrame, current: pd.DataFrame) -> str:
    """A Markdown table plus a small PNG (base64 data URI) for `MetadataValue.md`.

    The first panel shows every feature's PSI with the warn/error lines; the
    next ones overlay baseline and current distributions of the most drifted
    features. Uses a bare `Figure` (Agg canvas), so no pyplot global state
    and no display are involved.
    """
    rows = ["| feature | kind | PSI | KS | level |", "|---|---|---|---|---|"]
    for f in report.features:
        psi_text = f"{f.psi:.3f}" if f.psi is not None else "n/a"
        ks_text = f"{f.ks_statistic:.3f}" if f.ks_statistic is not None else "n/a"
        note = f" ({f.note})" if f.note else ""
        rows.append(f"| {f.name} | {f.kind} | {psi_text} | {ks_text} | **{f.level}**{note} |")
    png = _render_png(report, baseline, current)
    image = f"![drift against the trusted baseline](data:image/png;base64,{base64.b64encode(png).decode()})"
    return f"**Drift level: {report.level}**\n\n" + "\n".join(rows) + "\n\n" + image + "\n"


def _render_png(report: DriftReport, baseline: pd.DataFrame, current: pd.DataFrame) -> bytes:
    ranked = sorted(report.features, key=lambda f: (-LEVELS.index(f.level), -(f.psi or 0.0)))
    shown = [f for f in ranked if f.psi is not None][:_MAX_PANELS]
    panels = 1 + len(shown)
    cols = min(panels, 4)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(2.6 * cols, 2.0 * rows), dpi=72, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()

    ax = axes[0]
    names = [f.name for f in report.features]
    values = [f.psi if f.psi is not None else 0.0 for f in report.features]
    ax.barh(names, values, color=[_COLOURS[f.level] for f in report.features])
    ax.axvline(report.thresholds.warn_psi, color=_COLOURS["warn"], linestyle="--", linewidth=1)
    ax.axvline(report.thresholds.error_psi, color=_COLOURS["error"], linestyle="--", linewidth=1)
    ax.invert_yaxis()
    ax.set_title("PSI", fontsize=8)
    ax.tick_params(labelsize=6)

    for ax, feature in zip(axes[1:], shown, strict=False):
        if feature.kind == "numeric":
            e, a = _finite(baseline[feature.name]), _finite(current[feature.name])
            lo, hi = np.quantile(np.concatenate([e, a]), [0.005, 0.995])
            edges = np.linspace(lo, hi, 25) if hi > lo else 10
            ax.hist(e, bins=edges, density=True, alpha=0.5, color="#577590", label="baseline")
            ax.hist(a, bins=edges, density=True, alpha=0.5, color=_COLOURS[feature.level], label="current")
        else:
            e_sh = _category_shares(baseline[feature.name])
            a_sh = _category_shares(current[feature.name])
            keys = sorted(set(e_sh) | set(a_sh), key=lambda k: -max(e_sh.get(k, 0), a_sh.get(k, 0)))[:8]
            x = np.arange(len(keys))
            ax.bar(x - 0.2, [e_sh.get(k, 0) for k in keys], 0.4, color="#577590", label="baseline")
            ax.bar(
                x + 0.2, [a_sh.get(k, 0) for k in keys], 0.4, color=_COLOURS[feature.level], label="current"
            )
            ax.set_xticks(x, [k[:8] for k in keys], rotation=45)
        ax.set_title(f"{feature.name} ({feature.level})", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=5)
    for ax in axes[panels:]:
        ax.set_visible(False)

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72)
    return buf.getvalue()


def drift_check_result(
    report: DriftReport,
    *,
    plot_markdown: str | None = None,
    asset_key: dg.AssetKey | None = None,
    check_name: str | None = None,
) -> dg.AssetCheckResult:
    """The drift report as an asset-check result.

    Passes unless the level is "error". Severity is WARN at warn level and
    ERROR at error level, so a blocking check stops consumers only on error.
    """
    level = report.level
    per_feature = {f.name: f.to_dict() for f in report.features}
    psis = [f.psi for f in report.features if f.psi is not None]
    kss = [f.ks_statistic for f in report.features if f.ks_statistic is not None]
    metadata: dict[str, Any] = {
        "level": dg.MetadataValue.text(level),
        "drifted_features": dg.MetadataValue.json(report.drifted),
        "features": dg.MetadataValue.json(per_feature),
        "thresholds": dg.MetadataValue.json(asdict(report.thresholds)),
        "baseline_rows": dg.MetadataValue.int(report.baseline_rows),
        "current_rows": dg.MetadataValue.int(report.current_rows),
    }
    if psis:
        metadata["max_psi"] = dg.MetadataValue.float(max(psis))
    if kss:
        metadata["max_ks"] = dg.MetadataValue.float(max(kss))
    if plot_markdown is not None:
        metadata["drift_plot"] = dg.MetadataValue.md(plot_markdown)
    return dg.AssetCheckResult(
        passed=level != "error",
        severity=dg.AssetCheckSeverity.ERROR if level == "error" else dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        asset_key=asset_key,
        check_name=check_name,
        description=f"drift {level}: " + (", ".join(report.drifted) or "no feature drifted"),
    )
