"""An asset's drift report of a new window, and the blocking check on it.

Kept apart from `assets.checks.drift` (pure statistics) because Dagster reads
these functions' context annotations at definition time.
"""

from typing import Any

import dagster as dg
import pandas as pd

from assets.checks.drift import (
    DriftReport,
    DriftThresholds,
    drift_check_result,
    drift_plot_markdown,
    drift_report,
)


def window_drift(
    context: dg.AssetExecutionContext,
    baseline: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
) -> dict[str, Any]:
    """An asset's drift report of a new window against the trusted baseline, with its plot in metadata.

    An empty window is reported as "ok" (nothing arrived, nothing drifted).
    """
    if current.empty:
        context.add_output_metadata({"level": "ok", "window_rows": 0})
        return DriftReport(features=[], baseline_rows=len(baseline)).to_dict()
    report = drift_report(baseline, current, numeric, categorical, DriftThresholds())
    context.add_output_metadata(
        {
            "level": report.level,
            "window_rows": len(current),
            "drift_plot": dg.MetadataValue.md(drift_plot_markdown(report, baseline, current)),
        }
    )
    return report.to_dict()


def drift_error_check(key: dg.AssetKey) -> dg.AssetChecksDefinition:
    """Blocking check on a drift-report asset: passes at WARN (severity WARN), fails at ERROR."""

    @dg.asset_check(asset=key, name="drift_below_error", blocking=True)
    def drift_below_error(context: dg.AssetCheckExecutionContext, report: dict) -> dg.AssetCheckResult:
        """The window has not drifted past the ERROR thresholds from the trusted baseline (WARN passes)."""
        return drift_check_result(DriftReport.from_dict(report))

    return drift_below_error
