"""The Dagster UI in a real browser: one instance, one webserver and one Chromium per test session.

The instance (a throwaway DAGSTER_HOME with the repository's `dagster.yaml`, whose `nux`
setting keeps the first-visit community dialog away) holds
a small-world lifecycle of each example, run by the same `Shop` and `Clinic`
the lifecycle tests use, and the two runs the tests look at: a feedback
window (its drift plot) and a forged batch stopped by `batches_authenticated`;
then the e-commerce controls view, built from all of it.
The webserver starts first, so it loads both code locations while the worlds run.

Playwright drives Debian's Chromium (`/usr/bin/chromium`, which `.ci/run`
installs): nothing is downloaded at run time. With SCREENSHOTS=1
(`make screenshots`) the tests save what they looked at to docs/img/.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dagster import DagsterInstance
from playwright.sync_api import Browser as Chromium
from playwright.sync_api import expect, sync_playwright

from examples.ecommerce.shop import MODEL_EVENTS, Shop
from examples.healthcare.clinic import MODEL_STUDIES, Clinic
from examples.runs import checks
from resources.runtime import REPO_ROOT
from tests.ui.browser import (
    CHROMIUM,
    LOCATIONS,
    STARTUP_SECONDS,
    VIEWPORT,
    Browser,
    Worlds,
    failed_checks,
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _workspace(root: Path) -> Path:
    """workspace.yaml's entries for the two examples, loaded from the repository root."""
    entries = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())["load_from"]
    kept = [
        {kind: {**spec, "working_directory": str(REPO_ROOT)}}
        for entry in entries
        for kind, spec in entry.items()
        if spec.get("location_name") in LOCATIONS
    ]
    assert len(kept) == len(LOCATIONS), entries
    path = root / "workspace.yaml"
    path.write_text(yaml.safe_dump({"load_from": kept}))
    return path


@pytest.fixture(scope="session")
def ui_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    root = tmp_path_factory.mktemp("ui")
    (root / "dagster").mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", root / "dagster" / "dagster.yaml")
    return root


@pytest.fixture(scope="session")
def webserver(ui_root: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """`dagster-webserver` on a free loopback port over the session's instance (still loading)."""
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(ui_root / "dagster"),
        "PIPELINE_HOME": str(ui_root / "ui-home"),
        "PIPELINE_TRUST_STORE": str(ui_root / "ui-trust"),
        "PIPELINE_HEALTHCARE_SETTINGS": str(REPO_ROOT / "examples" / "healthcare" / "small-world.json"),
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    command = [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port)]
    log = (ui_root / "webserver.log").open("wb")
    server = subprocess.Popen(
        [*command, "-w", str(_workspace(ui_root))],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its code servers share its process group, stopped with it
    )
    yield server, f"http://127.0.0.1:{port}"
    _stop_group(server, signal.SIGTERM)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        _stop_group(server, signal.SIGKILL)
        server.wait()
    log.close()


def _stop_group(server: subprocess.Popen, signum: int) -> None:
    """Signal the webserver and the code servers it started (its own process group)."""
    try:
        os.killpg(server.pid, signum)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")
def worlds(ui_root: Path, webserver) -> Worlds:
    """Both lifecycles, a feedback window, a forged batch and the e-commerce controls view, run on the
    webserver's instance."""
    instance = DagsterInstance.from_config(str(ui_root / "dagster"))
    shop = Shop(ui_root / "shop", instance=instance, events=MODEL_EVENTS)  # enough for a model to promote
    assert shop.lifecycle().success, failed_checks(shop.runs[-1])
    shop.feedback(cycle=1)
    shop.run("ecommerce_feedback_intake")
    # The forged batch of the collection tests: a valid-looking batch signed by a key nobody enrolled.
    payloads = shop.payloads("user-activity", limit=20)
    forged = [{**p, "event_id": f"f{i:012x}"} for i, p in enumerate(payloads)]
    nobody = Ed25519PrivateKey.generate()
    shop.land("web-clickstream", forged, batch_id="web-clickstream-forged-1", signer=nobody)
    stopped = shop.run_selection(["ecommerce/activity_events", "ecommerce/sessions"])
    assert checks(stopped)["activity_events:batches_authenticated"] is False, checks(stopped)

    clinic = Clinic(ui_root / "clinic", instance=instance, studies=MODEL_STUDIES)  # a model that promotes
    assert clinic.lifecycle().success, failed_checks(clinic.runs[-1])
    # The e-commerce controls view, read from every check evaluation above (as the nightly audit does).
    assert shop.run("ecommerce_audit", assets=["ecommerce/controls"]).success
    return Worlds(shop=shop, clinic=clinic, stopped=stopped)


@pytest.fixture(scope="session")
def base_url(webserver, worlds: Worlds, ui_root: Path) -> str:
    """The webserver's address once it serves (it has loaded the workspace by then)."""
    server, url = webserver
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        try:
            if httpx.get(f"{url}/server_info", timeout=5).status_code == 200:
                return url
        except httpx.TransportError:
            pass
        time.sleep(1)
    log = (ui_root / "webserver.log").read_text(errors="replace")
    pytest.fail(f"dagster-webserver did not serve at {url} (exit {server.poll()}):\n{log[-4000:]}")


@pytest.fixture(scope="session")
def chromium(worlds: Worlds) -> Iterator[Chromium]:
    """One headless Chromium for the session: Debian's, never a downloaded one."""
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM))
        yield browser
        browser.close()


@pytest.fixture
def ui(chromium: Chromium, base_url: str) -> Iterator[Browser]:
    """A fresh page (own storage, fixed viewport, UTC) that records console and page errors."""
    context = chromium.new_context(viewport=VIEWPORT, locale="en-US", timezone_id="UTC")
    context.set_default_timeout(60_000)
    # expect() waits 5 s by default; a loaded 2-core CI runner lays out the asset graph slower than that.
    expect.set_options(timeout=60_000)
    browser = Browser(page=context.new_page(), base_url=base_url)
    browser.page.on("console", lambda m: browser.errors.append(m.text) if m.type == "error" else None)
    browser.page.on("pageerror", lambda error: browser.errors.append(str(error)))
    yield browser
    context.close()
