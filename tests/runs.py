"""Reading what a Dagster run did: which checks passed, what materialised, with what metadata."""

from __future__ import annotations

from dagster import ExecuteInProcessResult


def checks(result: ExecuteInProcessResult) -> dict[str, bool]:
    """Check name (asset/check) → passed, for every check evaluated in the run."""
    return {f"{e.asset_key.path[-1]}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}


def materialized(result: ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}


def metadata(result: ExecuteInProcessResult, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        if event.asset_key.path[-1] == asset:
            return {k: v.value for k, v in event.materialization.metadata.items()}
    raise KeyError(asset)
