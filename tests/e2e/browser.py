"""Headless Chromium for the console's end-to-end tests, and where their screenshots go.

Debian's ``chromium`` and ``chromedriver`` (``make test`` installs them when missing, through the Makefile's
``browser`` target) driven by selenium with the system driver: nothing downloads a browser. The tests skip
with the reason only when no Chromium can be found. Screenshots land in ``EMBREC_SCREENSHOTS`` (default
``.cache/console-screenshots/``, gitignored), one PNG per page, to look at.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)


def start_browser(profile: Path) -> Any:
    """A selenium Chrome driver on Debian's chromium (skips the test when none is installed)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip(
            "chromium and chromedriver are not installed and could not be (make test's `browser` target "
            "installs them with apt-get: apt-get install -y chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    return driver


def screenshot_dir() -> Path:
    """``EMBREC_SCREENSHOTS`` or ``.cache/console-screenshots`` (created)."""
    path = Path(os.environ.get("EMBREC_SCREENSHOTS") or ROOT / ".cache" / "console-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def screenshot(driver: Any, name: str, width: int = 1280) -> Path:
    """The whole page at ``width`` CSS pixels (390: a phone) as ``<name>.png``, through DevTools."""
    mobile = width < 600
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": mobile},
    )
    try:
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 8000),
                         "scale": 1},
            },
        )
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path = screenshot_dir() / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
