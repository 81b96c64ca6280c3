"""Playwright fixtures: Debian's Chromium, one browser per test, full-page screenshots.

No browser is downloaded: the tests drive ``/usr/bin/chromium``. Where it is missing they
are skipped on a developer's machine and fail in CI (``CI`` set), so CI never passes them
by skipping.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import connections
from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT_MS = 10_000

_screenshots = pytest.StashKey[list[Path]]()


@dataclass(frozen=True)
class Viewport:
    name: str
    width: int
    height: int
    is_mobile: bool = False


PHONE = Viewport("phone", 390, 844, is_mobile=True)
DESKTOP = Viewport("desktop", 1280, 800)
VIEWPORTS = [pytest.param(PHONE, id="phone"), pytest.param(DESKTOP, id="desktop")]


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    paths = config.stash.get(_screenshots, [])
    if paths:
        terminalreporter.write_sep("-", "browser screenshots")
        for path in paths:
            terminalreporter.write_line(str(path))


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI runs the browser tests, never skips them")
        pytest.skip(reason)
    # Playwright's sync API keeps an event loop running on this thread while it is open.
    # The test's own ORM calls (set-up, unchanged_db) are synchronous: allow them for as
    # long as this browser lives, and no longer.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            # With a loop running, Django keeps this thread's connections apart from the
            # usual ones; close them here, or they outlive the test and block the test
            # database's teardown.
            connections.close_all()
            browser.close()


@pytest.fixture
def viewport() -> Viewport:
    """Desktop unless the test parametrizes ``viewport``."""
    return DESKTOP


@pytest.fixture
def page(browser: Browser, viewport: Viewport) -> Iterator[Page]:
    context = browser.new_context(
        viewport={"width": viewport.width, "height": viewport.height},
        is_mobile=viewport.is_mobile,
        has_touch=viewport.is_mobile,
        locale="en-US",
        timezone_id="Europe/Amsterdam",
    )
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def screenshot(
    request: pytest.FixtureRequest, page: Page, viewport: Viewport
) -> Callable[[str], Path]:
    """``screenshot("step")`` saves a full-page PNG under test-results/browser/."""
    folder = request.config.rootpath / "test-results" / "browser"
    # "test_name[phone]" -> "test_name-phone"; the viewport is always part of the name.
    name = re.sub(r"[^\w.]+", "-", request.node.name).strip("-")
    if viewport.name not in name.split("-"):
        name = f"{name}-{viewport.name}"
    for old in folder.glob(f"{name}-*.png"):
        old.unlink()

    def take(step: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        request.config.stash.setdefault(_screenshots, []).append(path)
        print(f"screenshot: {path}")
        return path

    return take
