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


@asset
def learnt(context) -> None:
    context.log.debug("tensor shapes")
    context.log.info("epoch 1/2: loss 0.7")
    context.log.info("epoch 2/2: loss 0.4 [/lr 0.01]")
    context.log.info("scenario " + "x" * 150)


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
    steps = {words[0]: words[1] for words in map(str.split, shown) if words[1] in ("done", "FAILED")}
    # The blocking check's failure stopped `trained`, which never started, and Dagster's word on why is shown.
    assert steps == {
        "landed": "done",
        "landed_batches_authenticated": "FAILED",
        "landed_volume_within_baseline": "done",
    }
    assert next(line for line in shown if line.split()[0] == "landed").endswith("1,200 records")
    assert any(line.strip().startswith("Dependencies for step trained failed") for line in shown)
    assert [line.strip() for line in shown if line.strip().startswith("check")] == [
        "check landed:batches_authenticated FAILED (ERROR)"
    ]


def test_what_a_step_logs_at_info_is_shown_even_when_the_console_log_is_quiet():
    instance = DagsterInstance.ephemeral()
    out = io.StringIO()
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    job = Definitions(assets=[learnt], jobs=[define_asset_job("training")]).resolve_job_def("training")
    with followed(instance, "training", Console(file=out, width=120)) as run_id:
        job.execute_in_process(instance=instance, run_id=run_id, run_config=quiet)
    shown = [line.strip() for line in out.getvalue().splitlines() if line.strip()]
    # Shown verbatim (brackets are not markup) and whole, however wide the console.
    assert shown[:3] == ["epoch 1/2: loss 0.7", "epoch 2/2: loss 0.4 [/lr 0.01]", "scenario " + "x" * 150]
    assert shown[3].startswith("learnt") and "done" in shown[3]
    assert len(shown) == 4
