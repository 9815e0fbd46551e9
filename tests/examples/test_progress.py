"""The demo's live progress: what a person watching the terminal is told while a job runs."""

from __future__ import annotations

import io

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    DagsterInstance,
    Definitions,
    MaterializeResult,
    asset,
    asset_check,
    define_asset_job,
)
from rich.console import Console

from examples.progress import followed


@asset
def landed() -> MaterializeResult:
    return MaterializeResult(metadata={"accepted": 1200})


@asset_check(asset=landed, blocking=True)
def batches_authenticated() -> AssetCheckResult:
    return AssetCheckResult(passed=False, severity=AssetCheckSeverity.ERROR)


@asset_check(asset=landed)
def volume_within_baseline() -> AssetCheckResult:
    return AssetCheckResult(passed=True)


@asset(deps=[landed])
def trained() -> None:
    return None


def test_steps_records_and_a_failed_check_are_shown_as_they_happen():
    defs = Definitions(
        assets=[landed, trained],
        asset_checks=[batches_authenticated, volume_within_baseline],
        jobs=[define_asset_job("lifecycle")],
    )
    instance = DagsterInstance.ephemeral()
    out = io.StringIO()
    with followed(instance, "lifecycle", Console(file=out, width=120)) as run_id:
        result = defs.resolve_job_def("lifecycle").execute_in_process(
            instance=instance, raise_on_error=False, run_id=run_id
        )
    shown = [line for line in out.getvalue().splitlines() if line.strip()]
    assert result.run_id == run_id and not result.success
    steps = {line.split()[0]: line.split()[1] for line in shown if not line.strip().startswith("check")}
    # The blocking check's failure stopped `trained`, which never started.
    assert steps == {
        "landed": "done",
        "landed_batches_authenticated": "FAILED",
        "landed_volume_within_baseline": "done",
    }
    assert next(line for line in shown if line.split()[0] == "landed").endswith("1,200 records")
    assert [line.strip() for line in shown if line.strip().startswith("check")] == [
        "check landed:batches_authenticated FAILED (ERROR)"
    ]
