"""Fixtures for the browser tests: a real model server + gunicorn gateway, and headless Chromium.

Chromium is Debian's (``apt-get install chromium``), driven by Playwright for Python with
``executable_path`` (Playwright's own browser download is not used). Without Chromium or
Playwright these tests skip locally but FAIL when ``CI`` is set, so CI cannot go green without
having run them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
REPORTS_DIR = REPO_ROOT / "reports"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str | None:
    """``$CHROMIUM_PATH``, else Debian's ``chromium`` on PATH, else None."""
    explicit = os.environ.get("CHROMIUM_PATH")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the browser tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        _unavailable("Chromium not found: apt-get install chromium (or set CHROMIUM_PATH)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright not installed: pip install -e '.[browser]'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def demo_stack(chromium_browser: Any, models_root: Path) -> Iterator[tuple[Any, Any]]:
    """(model server, gateway) on free loopback ports, serving ``models_root``.

    Depends on ``chromium_browser`` so that a missing browser fails (or skips) at once, before
    pytest spends a minute training the fixture models."""
    from tests.helpers.gateway_process import running_gateway
    from tests.helpers.modelserver_process import running_modelserver

    with (
        running_modelserver(models_root) as modelserver,
        running_gateway(modelserver.grpc_target, models_root, workers=1) as gateway,
    ):
        yield modelserver, gateway
