"""The browser side of the UI tests: where Chromium is, the page each test gets, and screenshots."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Page

from resources.runtime import REPO_ROOT

CHROMIUM = Path(os.environ.get("PIPELINE_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = REPO_ROOT / "docs" / "img"
VIEWPORT = {"width": 1440, "height": 900}


@dataclass
class Browser:
    """One test's page on the UI, with the console errors it logged."""

    page: Page
    base_url: str
    errors: list[str] = field(default_factory=list)

    def open(self, path: str) -> Page:
        self.page.goto(self.base_url + path)
        return self.page

    def screenshot(self, name: str, prepare: Callable[[Page], object] | None = None) -> None:
        """Save the viewport as docs/img/<name>.png when SCREENSHOTS is set, after `prepare(page)`
        (framing only: what a test checks never depends on it)."""
        if os.environ.get("SCREENSHOTS"):
            if prepare is not None:
                prepare(self.page)
                self.page.wait_for_timeout(1000)  # let the view settle (graph zoom, scrolling)
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=SCREENSHOTS / f"{name}.png", animations="disabled")


def fit_graph(page: Page) -> None:
    """Hide the graph's sidebar, centre the graph and zoom out until all of it shows."""
    page.locator("button:has([aria-label='panel_show_right'])").filter(has_not_text="Hide navigation").click()
    page.wait_for_timeout(500)
    page.mouse.dblclick(VIEWPORT["width"] // 2 - 450, VIEWPORT["height"] - 20)  # the background: centre
    page.wait_for_timeout(500)
    for _ in range(2):
        page.locator("button:has([aria-label='zoom_out'])").click()
