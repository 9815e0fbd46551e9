"""Reading the evidence an asset recorded when it materialised."""

from typing import Any

from dagster import AssetCheckExecutionContext, AssetKey

from domain.accounting import IntakeReport


def materialization_metadata(context: AssetCheckExecutionContext, key: AssetKey) -> dict[str, Any]:
    """The metadata values of the asset's newest materialisation (what this run just wrote)."""
    event = context.instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return {}
    return {name: value.value for name, value in event.asset_materialization.metadata.items()}


def intake_report(context: AssetCheckExecutionContext, key: AssetKey) -> IntakeReport:
    """The intake report the collection asset `key` recorded in its newest materialisation."""
    recorded = materialization_metadata(context, key).get("intake_report")
    if recorded is None:
        raise LookupError(
            f"{key.to_user_string()} recorded no intake report: materialise it before its checks"
        )
    return IntakeReport.from_json(recorded)
