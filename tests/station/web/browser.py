"""Debian's headless Chromium, driven through Debian's chromedriver by Selenium (installed by `make browser`):
nothing is downloaded, and each browser gets a fresh profile."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

__all__ = ["CHROMEDRIVER", "CHROMIUM", "chromium"]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,800",
)


@contextlib.contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    if missing:  # not a skip: `make test` installs them, and a test that never runs proves nothing
        raise RuntimeError(f"{', '.join(missing)} missing: run `make browser` (Debian's chromium, chromium-driver)")
    with tempfile.TemporaryDirectory(prefix="reflash-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
        try:
            driver.set_page_load_timeout(30)
            # The bench's screen: a 1280x800 viewport (the window's size would include the browser's own frame).
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})  # fmt: skip
            yield driver
        finally:
            driver.quit()
