"""What a reviewer sees in the Dagster UI, checked in a real browser over runs of both examples.

Each test opens a view as a person would and compares what it shows with what
the definitions and the runs say: the locations load, the lifecycle graph has
its stage groups, an asset's blocking checks show their last results, a stopped
run names the check that stopped it, the drift plot is an image that loads, and
the controls view lists the checklist with the instance's check results.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from dagster import AssetKey, Definitions
from playwright.sync_api import expect

from examples.runs import PipelineInstance
from tests.ui.browser import LOCATIONS, Browser, Worlds, failed_checks, fit_graph

pytestmark = pytest.mark.slow

STAGES = ("collection", "storage", "processing", "modeling", "deployment", "monitoring")
CHECKED_ASSET = AssetKey(["ecommerce", "activity_events"])
DRIFT_ASSET = AssetKey(["ecommerce", "feedback_drift"])
CONTROLS_ASSET = AssetKey(["ecommerce", "controls"])
STATUS = {True: "Succeeded", False: "Failed"}
# A row of the UI's tables (code locations, an asset's checks): Dagster 1.13 draws them as divs.
ROW = "[class*='VirtualizedTable_row']"


def location_groups(defs: Definitions) -> set[str]:
    graph = defs.resolve_asset_graph()
    return {graph.get(key).group_name for key in graph.get_all_asset_keys()}


def asset_checks(defs: Definitions, asset: AssetKey) -> dict[str, bool]:
    """Check name → blocking, for every check the definitions put on `asset`."""
    graph = defs.resolve_asset_graph()
    return {key.name: graph.get_check_spec(key).blocking for key in graph.get_check_keys_for_assets({asset})}


def last_results(pipeline: PipelineInstance, asset: AssetKey) -> dict[str, bool]:
    """Check name → passed, as the newest run that evaluated each check on `asset` recorded it."""
    results: dict[str, bool] = {}
    for run in pipeline.runs:
        results |= {e.check_name: e.passed for e in run.get_asset_check_evaluations() if e.asset_key == asset}
    return results


def asset_path(key: AssetKey) -> str:
    return "/assets/" + "/".join(quote(part) for part in key.path)


def test_both_code_locations_load_with_no_error(ui: Browser):
    page = ui.open("/locations")
    for location in LOCATIONS:
        row = page.locator(ROW).filter(has=page.locator(f"a[href='/locations/{location}/']"))
        expect(row).to_contain_text("Loaded")
    expect(page.get_by_text("View error")).to_have_count(0)
    expect(page.get_by_text("failed to load")).to_have_count(0)
    expect(page.get_by_text("Join the Dagster community")).to_have_count(0)
    assert ui.errors == []


@pytest.mark.parametrize("location", LOCATIONS)
def test_each_location_graph_shows_the_lifecycle_stage_groups(ui: Browser, worlds: Worlds, location: str):
    pipeline = {"ecommerce": worlds.shop, "healthcare": worlds.clinic}[location]
    groups = location_groups(pipeline.defs)
    assert set(STAGES) <= groups
    expanded = ",".join(f"global@global:{group}" for group in sorted(groups))
    page = ui.open(f"/asset-groups~{quote(f'code_location:{location}')}/?expanded={quote(expanded)}")
    # The group boxes drawn in the graph (the sidebar lists the groups as well).
    headers = page.locator("[class*='ExpandedGroupNode_groupNodeHeader']")
    for group in groups:
        expect(headers.filter(has_text=group).first).to_be_visible()
    expect(headers).to_have_count(len(groups))
    ui.screenshot(f"ui-{location}-lineage", prepare=fit_graph)
    assert ui.errors == []


def test_an_assets_checks_tab_lists_its_blocking_checks_with_their_last_results(ui: Browser, worlds: Worlds):
    defined = asset_checks(worlds.shop.defs, CHECKED_ASSET)
    expected = sorted(name for name, blocking in defined.items() if blocking)
    results = last_results(worlds.shop, CHECKED_ASSET)
    assert expected and set(expected) <= set(results), (expected, results)
    page = ui.open(f"{asset_path(CHECKED_ASSET)}?view=checks")
    expect(page.get_by_text(f"Checks ({len(defined)})", exact=True)).to_be_visible()
    rows = {name: page.locator(ROW).filter(has=page.get_by_text(name, exact=True)) for name in expected}
    for name, row in rows.items():
        expect(row).to_contain_text(STATUS[results[name]])
    rows[next(name for name in expected if not results[name])].click()
    detail = page.get_by_text("This is a blocking asset check.")
    expect(detail).to_be_visible()
    expect(page.get_by_text("Latest execution")).to_be_visible()
    ui.screenshot("ui-asset-checks")
    assert ui.errors == []


def test_a_run_stopped_by_a_blocking_check_names_the_check(ui: Browser, worlds: Worlds):
    stopped = worlds.stopped
    failed = failed_checks(stopped)
    assert failed and not stopped.success
    page = ui.open(f"/runs/{stopped.run_id}?logs={quote('type:STEP_FAILURE')}")
    expect(page.get_by_text("Failure", exact=True).first).to_be_visible()
    for asset, check in failed:
        expect(page.get_by_text(f"{asset.to_user_string()}: {check}").first).to_be_visible()
    expect(page.get_by_text("blocking asset check failed with ERROR severity").first).to_be_visible()
    first = page.get_by_text(f"{failed[0][0].to_user_string()}: {failed[0][1]}").first
    ui.screenshot("ui-stopped-run", prepare=lambda _: first.scroll_into_view_if_needed())
    assert ui.errors == []


def test_the_drift_plot_image_loads(ui: Browser, worlds: Worlds):
    recorded = worlds.shop.instance.get_latest_materialization_event(DRIFT_ASSET).asset_materialization
    assert "![" in recorded.metadata["drift_plot"].value
    page = ui.open(asset_path(DRIFT_ASSET))
    page.get_by_role("row").filter(has_text="drift_plot").get_by_text("[Show Markdown]").click()
    image = page.get_by_role("img", name="drift against the trusted baseline")
    expect(image).to_be_visible()
    width, height = image.evaluate("img => [img.complete && img.naturalWidth, img.naturalHeight]")
    assert width > 100 and height > 100, (width, height)
    ui.screenshot("ui-drift-plot")
    assert ui.errors == []


def test_the_controls_view_lists_the_checklist_with_the_instances_results(ui: Browser, worlds: Worlds):
    recorded = worlds.shop.instance.get_latest_materialization_event(CONTROLS_ASSET).asset_materialization
    assert recorded.metadata["items"].value == 24 and recorded.metadata["checks_passed"].value > 0
    page = ui.open(asset_path(CONTROLS_ASSET))
    page.get_by_role("row").filter(has=page.get_by_text("controls", exact=True)).get_by_text(
        "[Show Markdown]"
    ).click()
    table = page.locator("table").filter(has=page.get_by_role("columnheader", name="checklist item"))
    expect(table.locator("tbody tr")).to_have_count(24)
    expect(table.locator("tbody")).to_contain_text("passed")
    ui.screenshot("ui-controls")
    assert ui.errors == []
