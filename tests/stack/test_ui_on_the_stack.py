"""What a reviewer sees in the Dagster UI, checked in a real browser, through the stack's proxy.

The browser signs in to the production stack's UI proxy as the operator, as a
person would, and looks at the runs the stack tier made: both lifecycles, a
week of feedback taken in by the daemon, a forged batch stopped by
`batches_authenticated`, and the e-commerce controls view built from all of
it. Each test opens a view and compares what it shows with what the
definitions and the instance say; without credentials the proxy answers 401.

Playwright drives Debian's Chromium (`/usr/bin/chromium`, which `.ci/run`
installs): nothing is downloaded at run time. With SCREENSHOTS=1
(`make screenshots`) the tests save what they looked at to docs/img/.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dagster import AssetKey, DagsterRun, DagsterRunStatus, Definitions
from playwright.sync_api import Browser as Chromium
from playwright.sync_api import ConsoleMessage, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from deploy.stack.proxy import USERS
from deploy.stack.runs import StackRuns
from deploy.stack.settings import HOST, Stack
from examples.ecommerce.shop import Shop
from examples.healthcare.clinic import Clinic
from tests.stack.browser import CHROMIUM, VIEWPORT, Browser, fit_graph

pytestmark = pytest.mark.slow

LOCATIONS = ("ecommerce", "healthcare")
STAGES = ("collection", "storage", "processing", "modeling", "deployment", "monitoring")
ACTIVITY = AssetKey(["ecommerce", "activity_events"])
DRIFT_ASSET = AssetKey(["ecommerce", "feedback_drift"])
CONTROLS_ASSET = AssetKey(["ecommerce", "controls"])
STATUS = {True: "Succeeded", False: "Failed"}
# A row of the UI's tables (code locations, an asset's checks): Dagster 1.13 draws them as divs.
ROW = "[class*='VirtualizedTable_row']"


@dataclass
class Worlds:
    """What ran on the stack the UI shows."""

    shop: Shop
    clinic: Clinic
    runs: StackRuns
    stopped: DagsterRun  # a collection run a failed blocking check stopped


@pytest.fixture(scope="module")
def worlds(shop: Shop, clinic: Clinic, clean_feedback, runs: StackRuns) -> Worlds:
    """Both lifecycles and a week of feedback (the session's), then a forged batch, and the e-commerce
    controls view read from every check evaluation so far (as the nightly audit does)."""
    _, intake = clean_feedback
    assert intake is not None, "the landing sensor started no intake"
    assert intake.status == DagsterRunStatus.SUCCESS, runs.why_failed(intake)
    # A valid-looking batch signed by a key nobody enrolled, then its collection submitted.
    payloads = shop.payloads("user-activity", limit=20)
    forged = [{**p, "event_id": f"f{i:012x}"} for i, p in enumerate(payloads)]
    nobody = Ed25519PrivateKey.generate()
    shop.land("web-clickstream", forged, batch_id="web-clickstream-forged-1", signer=nobody)
    stopped = runs.run("ecommerce", "ecommerce_lifecycle", [ACTIVITY, AssetKey(["ecommerce", "sessions"])])
    assert (ACTIVITY, "batches_authenticated") in runs.failed_checks(stopped.run_id), runs.why_failed(stopped)
    audit = runs.run("ecommerce", "ecommerce_audit", [CONTROLS_ASSET])
    assert audit.status == DagsterRunStatus.SUCCESS, runs.why_failed(audit)
    return Worlds(shop=shop, clinic=clinic, runs=runs, stopped=stopped)


@pytest.fixture(scope="module")
def chromium(worlds: Worlds) -> Iterator[Chromium]:
    """One headless Chromium for the module: Debian's, never a downloaded one."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM))
        yield browser
        browser.close()


def _page(chromium: Chromium, stack: Stack, password: str | None) -> Browser:
    """A fresh page on the proxy, as `operator` with `password` (none: not signed in), with its own
    storage, a fixed viewport and UTC, that records console and page errors.

    Chromium is told to accept the proxy's certificate rather than to trust the stack's CA (it keeps
    its own trust store); the proxy's TLS is verified in test_access_on_the_stack.py.
    """
    context = chromium.new_context(
        viewport=VIEWPORT,
        locale="en-US",
        timezone_id="UTC",
        ignore_https_errors=True,
        # Sent with every request, as a browser does once signed in, rather than after a 401 on each.
        http_credentials=(
            {"username": "operator", "password": password, "send": "always"} if password else None
        ),
    )
    context.set_default_timeout(60_000)
    # expect() waits 5 s by default; a loaded 2-core CI runner lays out the asset graph slower than that.
    expect.set_options(timeout=60_000)
    browser = Browser(page=context.new_page(), base_url=f"https://{HOST}:{stack.port('proxy')}")
    browser.page.on("console", lambda m: browser.errors.append(_said(m)) if m.type == "error" else None)
    browser.page.on("pageerror", lambda error: browser.errors.append(str(error)))
    return browser


def _said(message: ConsoleMessage) -> str:
    """A console error with the resource it is about ("Failed to load resource" names none itself)."""
    url = message.location.get("url")
    return f"{message.text} ({url})" if url else message.text


@pytest.fixture
def ui(chromium: Chromium, stack: Stack) -> Iterator[Browser]:
    """The operator's page, signed in to the proxy."""
    browser = _page(chromium, stack, stack.credentials()[USERS["operator"]])
    yield browser
    browser.page.context.close()


def location_groups(defs: Definitions) -> set[str]:
    graph = defs.resolve_asset_graph()
    return {graph.get(key).group_name for key in graph.get_all_asset_keys()}


def asset_checks(defs: Definitions, asset: AssetKey) -> dict[str, bool]:
    """Check name → blocking, for every check the definitions put on `asset`."""
    graph = defs.resolve_asset_graph()
    return {key.name: graph.get_check_spec(key).blocking for key in graph.get_check_keys_for_assets({asset})}


def last_results(runs: StackRuns, asset: AssetKey) -> dict[str, bool]:
    """Check name → passed, as the newest run that evaluated each check on `asset` recorded it."""
    results: dict[str, bool] = {}
    for run in runs.launched(known=set()):
        evaluations = runs.check_evaluations(run.run_id)
        results |= {e.check_name: e.passed for e in evaluations if e.asset_key == asset}
    return results


def asset_path(key: AssetKey) -> str:
    return "/assets/" + "/".join(quote(part) for part in key.path)


def test_a_browser_that_has_not_signed_in_gets_no_page(chromium: Chromium, stack: Stack):
    """The proxy answers 401; Chromium, with no password to give, shows nothing."""
    stranger = _page(chromium, stack, password=None)
    try:
        for path in ("/", "/locations", "/graphql"):
            with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
                stranger.open(path)
            assert stranger.page.request.get(stranger.base_url + path).status == 401
    finally:
        stranger.page.context.close()


def test_a_browser_with_a_wrong_password_gets_the_proxys_refusal(chromium: Chromium, stack: Stack):
    stranger = _page(chromium, stack, password="not-the-password")  # noqa: S106 - the wrong one
    try:
        for path in ("/", "/locations", "/graphql"):
            response = stranger.page.goto(stranger.base_url + path)
            assert response is not None and response.status == 401, (path, response and response.status)
            expect(stranger.page.get_by_text("401 Authorization Required")).to_be_visible()
    finally:
        stranger.page.context.close()


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
    defined = asset_checks(worlds.shop.defs, ACTIVITY)
    expected = sorted(name for name, blocking in defined.items() if blocking)
    results = last_results(worlds.runs, ACTIVITY)
    assert expected and set(expected) <= set(results), (expected, results)
    page = ui.open(f"{asset_path(ACTIVITY)}?view=checks")
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
    failed = worlds.runs.failed_checks(stopped.run_id)
    assert failed and stopped.status == DagsterRunStatus.FAILURE
    page = ui.open(f"/runs/{stopped.run_id}?logs={quote('type:STEP_FAILURE')}")
    expect(page.get_by_text("Failure", exact=True).first).to_be_visible()
    for asset, check in failed:
        expect(page.get_by_text(f"{asset.to_user_string()}: {check}").first).to_be_visible()
    expect(page.get_by_text("blocking asset check failed with ERROR severity").first).to_be_visible()
    first = page.get_by_text(f"{failed[0][0].to_user_string()}: {failed[0][1]}").first
    ui.screenshot("ui-stopped-run", prepare=lambda _: first.scroll_into_view_if_needed())
    assert ui.errors == []


def test_the_drift_plot_image_loads(ui: Browser, worlds: Worlds):
    recorded = worlds.runs.instance.get_latest_materialization_event(DRIFT_ASSET).asset_materialization
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
    recorded = worlds.runs.instance.get_latest_materialization_event(CONTROLS_ASSET).asset_materialization
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
