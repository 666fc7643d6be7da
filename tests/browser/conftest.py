"""Fixtures for the browser tests: the real app under uvicorn, and Debian's Chromium.

The app runs in a background thread on a free port, on a temporary SQLite database and
storage directory (the embedded default: in-process worker, memory broker). The browser is
``/usr/bin/chromium`` driven by Playwright; playwright's own browser download is never used
(``make test`` installs Debian's ``chromium`` when it is missing). Without Chromium or the
``playwright`` package the tests skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
from ci import unavailable

from app.commands.embedded import embedded_server

CHROMIUM = Path(os.environ.get("SKYPHOT_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"


def browser_unavailable(reason: str) -> NoReturn:
    """Skip, or fail under ``CI=true``: CI must never skip the browser tests."""
    unavailable(f"browser tests cannot run: {reason} (run `make test`, which installs it)")


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a real skyphot on a free port, with its own database and storage."""
    with embedded_server(tmp_path_factory.mktemp("skyphot-browser")) as url:
        yield url


@pytest.fixture
def api(server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """Debian's Chromium under Playwright, headless."""
    if not CHROMIUM.exists():
        browser_unavailable(f"{CHROMIUM} is missing (Debian package `chromium`)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        browser_unavailable("the `playwright` package is not installed (dev extras)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


CALL_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def page(
    chromium: Any, request: pytest.FixtureRequest, artifacts: Path
) -> Iterator[Any]:
    """A fresh page; console errors and failed page scripts are collected on ``page.errors``.

    When the test fails, the page as it was is saved as ``FAILED-<test>.png`` with the
    messages the page showed, so the failure can be seen after the run.
    """
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error"
            else None)
    page.errors = errors
    try:
        yield page
    finally:
        if request.node.stash.get(CALL_FAILED, False):
            name = request.node.name
            page.screenshot(path=str(artifacts / f"FAILED-{name}.png"), full_page=True)
            shown = page.locator("[data-testid=errors]").inner_text()
            (artifacts / f"FAILED-{name}.txt").write_text(
                f"errors shown on the page:\n{shown}\n\nconsole:\n" + "\n".join(errors))
        context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """test-artifacts/browser/, without the failure shots of an earlier run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for stale in ARTIFACTS.glob("FAILED-*"):
        stale.unlink()
    return ARTIFACTS
