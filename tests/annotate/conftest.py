"""A real headless Chromium for the page tests (skipped, with the reason, where there is none)."""
from __future__ import annotations

import os
import shutil

import pytest

# Quiet and self-contained: no sandbox (CI runs as root), no GPU, nothing fetched from outside.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def chromium_path() -> str | None:
    """SEGDET_CHROMIUM, else `chromium` or `chromium-browser` on PATH."""
    explicit = os.environ.get("SEGDET_CHROMIUM")
    if explicit:
        return explicit
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium: install it (Debian: apt-get install chromium) or set SEGDET_CHROMIUM=/path/to/it")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh page (own storage) whose console errors and uncaught exceptions are collected in `page.errors`."""
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    new = context.new_page()
    new.set_default_timeout(20_000)
    new.errors = []
    new.on("pageerror", lambda error: new.errors.append(str(error)))
    yield new
    context.close()
