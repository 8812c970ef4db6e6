"""Headless Chromium for the UI tests: Debian's ``chromium`` package driven by Playwright's
Python package (never a browser Playwright downloads). A missing browser or package FAILS the
tests, naming the bootstrap step that installs it.

:class:`Browser` wraps one browser context and records every JavaScript console error and
uncaught page error, so a test can assert that no page it opened logged one."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
# Needed on the closed build network: no sandbox in the container, no GPU, no calls out.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def require_chromium() -> str:
    """The Chromium binary, or a failed test saying which bootstrap step installs it."""
    path = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not path:
        pytest.fail(f"Chromium is not installed ({CHROMIUM} is missing): the UI tests need "
                    "Debian's browser: run `apt-get install -y chromium` as root (the "
                    "bootstrap step in .ci/run); never `playwright install`")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("Playwright's Python package is not installed: `.venv/bin/pip install "
                    "playwright==1.65.2` (the project's test extra)")
    return path


@dataclass
class Browser:
    """A browser context on the platform's API URL, and the errors its pages logged."""

    context: Any
    base_url: str
    errors: list[str] = field(default_factory=list)

    def page(self) -> Any:
        """A new tab whose console errors and page errors are recorded."""
        page = self.context.new_page()
        page.on("console", lambda msg: self.errors.append(f"{page.url}: {msg.text}")
                if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: {exc}"))
        return page

    def take_errors(self) -> list[str]:
        """The errors recorded so far, forgotten here (after a deliberately refused page,
        whose 401 or 403 Chromium logs as a failed resource load)."""
        taken, self.errors[:] = list(self.errors), []
        return taken

    def sign_in(self, token: str) -> Any:
        """A tab signed in through the form: the token typed, Enter pressed."""
        page = self.page()
        page.goto(self.base_url + "/")
        page.fill("input[name=token]", token)
        page.press("input[name=token]", "Enter")
        page.wait_for_selector("h1:has-text('Jobs')")
        return page


@contextmanager
def chromium(base_url: str) -> Iterator[Any]:
    """Playwright's Chromium (the Debian binary), headless; yields a ``new_browser(...)``
    factory of fresh contexts (each its own cookie jar)."""
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS,
                                     headless=True)
        try:
            def new_browser(**options: Any) -> Browser:
                return Browser(browser.new_context(base_url=base_url, **options), base_url)
            yield new_browser
        finally:
            browser.close()
