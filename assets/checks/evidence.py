"""Reading the evidence an asset recorded when it materialised."""

from typing import Any

from dagster import AssetCheckExecutionContext, AssetKey


def materialization_metadata(context: AssetCheckExecutionContext, key: AssetKey) -> dict[str, Any]:
    """The metadata values of the asset's newest materialisation (what this run just wrote)."""
    event = context.instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return {}
    return {name: value.value for name, value in event.asset_materialization.metadata.items()}
