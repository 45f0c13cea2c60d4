"""A real browser for the dashboard tests: Playwright driving Debian's Chromium.

Playwright's own browser download is not available here, so it launches the system binary
(``/usr/bin/chromium``, apt package ``chromium``; ``AGENTKIT_TEST_CHROMIUM`` overrides).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

CHROMIUM = (
    os.environ.get("AGENTKIT_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def chromium_available() -> bool:
    return os.access(CHROMIUM, os.X_OK)


@asynccontextmanager
async def browser_page(viewport: dict[str, int] | None = None) -> AsyncIterator[Any]:
    """A fresh page in a headless Chromium (closed afterwards); console errors fail loudly."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = await browser.new_context(viewport=viewport or {"width": 1360, "height": 860})
            page = await context.new_page()
            page.set_default_timeout(120_000)  # generous: agents on a loaded machine are slow
            page.console_errors = []  # type: ignore[attr-defined]
            page.on(
                "console",
                lambda msg: msg.type == "error" and page.console_errors.append(msg.text),  # type: ignore[attr-defined]
            )
            page.on("pageerror", lambda exc: page.console_errors.append(str(exc)))  # type: ignore[attr-defined]
            yield page
        finally:
            await browser.close()
