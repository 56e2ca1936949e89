"""A real headless Chromium for the dashboard's browser tests, driven by Playwright.

    async with chromium() as browser:
        tab = await browser.open(f"{daemon.url}/")
        await tab.page.wait_for_selector("body[data-live=open]")
        assert tab.dialogs == []

Playwright drives the system's Chromium (`apt-get install chromium`; scripts/host-services.sh
installs it): its own browser download cannot work offline. Each `chromium()` is a new browser
with a fresh profile in a temporary directory, gone afterwards, as is every process it
started. Each tab records the dialogs that opened (and dismisses them), uncaught script
errors and console errors, so a test can say none happened.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import (
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Error,
    Page,
    async_playwright,
)

from tests.support.services import require

CHROMIUM = Path(os.environ.get("RECONCILER_TEST_CHROMIUM", "/usr/bin/chromium"))
# Headless as root in a container: no sandbox, no GPU, and nothing that phones home.
ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
)
TIMEOUT_MS = 30_000  # a bound on each browser action, so a broken page fails, not hangs


@dataclass
class Tab:
    page: Page
    dialogs: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    async def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        await dialog.dismiss()

    def _page_error(self, error: Error) -> None:
        self.page_errors.append(str(error))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)


@dataclass
class Browser:
    context: BrowserContext

    async def open(self, url: str) -> Tab:
        page = await self.context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        tab = Tab(page)
        page.on("dialog", tab._dialog)
        page.on("pageerror", tab._page_error)
        page.on("console", tab._console)
        await page.goto(url)
        return tab

    async def login(self, base: str, token: str) -> None:
        """Log in as the daemon's login link does: the session cookie is kept for the rest
        of this browser's pages."""
        tab = await self.open(f"{base}/login?token={token}")
        await tab.page.close()


def installed() -> Path:
    """The Chromium to drive; skips (or fails in CI) when it is not installed."""
    require(CHROMIUM.exists(), f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    return CHROMIUM


@asynccontextmanager
async def chromium(
    *, width: int = 1400, height: int = 900, javascript: bool = True
) -> AsyncIterator[Browser]:
    """A headless Chromium with a fresh profile; closed, with its processes, on the way out.
    `javascript=False` browses as someone with scripts turned off."""
    executable = installed()
    with tempfile.TemporaryDirectory(prefix="reconciler-chromium-") as profile:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                profile,
                executable_path=str(executable),
                headless=True,
                args=list(ARGS),
                viewport={"width": width, "height": height},
                java_script_enabled=javascript,
            )
            try:
                yield Browser(context)
            finally:
                await context.close()
