"""Debian's headless Chromium for the browser tests (never a browser Playwright downloads),
shared by the workbench's and the storefront's end-to-end tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = os.environ.get("CXAGENT_CHROMIUM") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[1]
SHOTS = Path(os.environ.get("CXAGENT_ARTIFACTS") or REPO / "test-artifacts" / "screenshots")


def unavailable(reason: str) -> NoReturn:
    """No browser: a failure where CI is set (the test must run there), a skip elsewhere."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason} (required when CI is set: apt-get install chromium)")
    pytest.skip(reason)


@contextmanager
def chromium_browser() -> Iterator[Browser]:
    """Chromium launched headless with the flags this machine needs, closed afterwards."""
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the dev extra installs it
        unavailable("Playwright is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).exists():
        unavailable(f"Chromium is not installed at {CHROMIUM}")
    with sync_playwright() as p:
        try:
            launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except PlaywrightError as exc:
            unavailable(f"Chromium at {CHROMIUM} does not start: {exc}")
        try:
            yield launched
        finally:
            launched.close()
