"""Screenshots of the bench page in three states, for docs/bench-page.md: a hub being flashed, the bench after a
REFLASHED and a REFUSED hub, and a page that has lost its station. Real parts: `reflash run` over simulated TCP hubs
and Debian's headless Chromium at 1280x800 (`make browser`), as in tests/station/web/test_page_browser.py.

    .venv/bin/python tools/screenshots.py [--out docs]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

from station.demo import build_demo_world, device_id  # noqa: E402
from tests.station.test_slot_faults import Bench  # noqa: E402
from tests.station.web.browser import chromium  # noqa: E402
from tests.station.web.conftest import PINS, start_station  # noqa: E402


def until(condition: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("the page did not get there in time")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    out = parser.parse_args().out
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(build_demo_world(Path(tmp) / "world"))
        try:
            station = start_station(bench, baud="57600")
            with chromium() as driver:
                driver.get(station.url + "/")
                driver.find_element(By.ID, "operator").send_keys("sam")
                driver.find_element(By.ID, "pin").send_keys(PINS["sam"] + Keys.ENTER)

                def shows(css: str, words: str) -> Callable[[], bool]:
                    return lambda: words in driver.find_element(By.CSS_SELECTOR, css).text

                until(shows("#link-text", "live"), 15)
                until(shows("#slot-R .outcome", "REFUSED"), 30)
                driver.find_element(By.ID, "scan-id").send_keys(device_id(1, 1) + Keys.ENTER)
                until(lambda: driver.find_element(By.CSS_SELECTOR, '#slot-H [data-f="rate"]').text.endswith("/s"), 30)
                until(shows('#slot-H [data-f="percent"]', "4"), 30)
                driver.save_screenshot(str(out / "bench-page-flashing.png"))
                until(shows("#slot-H .outcome", "REFLASHED"), 90)
                driver.find_element(By.CSS_SELECTOR, 'input[value="dispatch"]').click()
                driver.find_element(By.ID, "scan-id").send_keys(device_id(1, 1) + Keys.ENTER)
                until(shows("#feedback", "dispatched"), 5)
                until(shows('[data-o="dispatched"]', "1"), 5)  # the order's figures follow on the next event
                driver.save_screenshot(str(out / "bench-page-done.png"))
                station.kill()
                until(shows("#link-text", "LOST"), 5)
                driver.save_screenshot(str(out / "bench-page-lost.png"))
        finally:
            bench.close()
    print(f"wrote {out}/bench-page-flashing.png, bench-page-done.png, bench-page-lost.png")


if __name__ == "__main__":
    main()
