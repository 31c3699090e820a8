"""The bench page in a real headless Chromium against a running station on a simulated bench: sign in, watch a slot
go from held to REFLASHED with its progress moving (after scanning its hub in by typing its ID and Enter), see a
refused hub's reason in words and code, and lose the station."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from station.demo import device_id
from tests.station.test_slot_faults import Bench, Events
from tests.station.web.browser import chromium
from tests.station.web.conftest import PINS, PageStation, reflash, start_station


def until(condition: Callable[[], object], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {within} s")
        time.sleep(0.05)


def text(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def sign_in(driver: WebDriver, url: str, operator: str, pin: str) -> None:
    driver.get(url + "/")
    driver.find_element(By.ID, "operator").send_keys(operator)
    driver.find_element(By.ID, "pin").send_keys(pin + Keys.ENTER)
    until(lambda: "live" in text(driver, "#link-text"), 15, "live link")


def test_the_page_shows_the_bench_live_takes_a_scan_and_says_when_the_station_is_lost(bench: Bench) -> None:
    station = start_station(bench)
    with chromium() as driver:
        sign_in(driver, station.url, "olive", PINS["olive"])
        assert "olive" in text(driver, ".who")

        # The refused hub: its outcome with an icon, its reason in words and its code.
        until(lambda: "REFUSED" in text(driver, "#slot-R .outcome"), 30, "refused outcome")
        refused = text(driver, "#slot-R .outcome")
        assert refused.startswith("✖ REFUSED")
        assert "(UNKNOWN_MODEL)" in refused
        assert "model" in refused.split("·")[-1]  # the rule in words

        # The honest hub waits for its scan-in; the scanner types its ID and Enter into the focused field.
        until(lambda: text(driver, "#slot-H .state").startswith("HELD"), 30, "held slot")
        scan = driver.switch_to.active_element
        assert scan.get_attribute("id") == "scan-id"
        scan.send_keys(device_id(1, 1) + Keys.ENTER)
        until(lambda: "received" in text(driver, "#feedback"), 5, "scan feedback")
        assert text(driver, "#feedback").startswith("✔")

        # Its progress moves, with a rate and the time left, up to REFLASHED.
        seen: set[str] = set()
        rates: set[str] = set()

        def finished() -> bool:
            percent = text(driver, '#slot-H [data-f="percent"]')
            if text(driver, "#slot-H .state") == "TRANSFERRING" and percent not in ("0%", "100%"):
                seen.add(percent)
                rates.add(text(driver, '#slot-H [data-f="rate"]') + " " + text(driver, '#slot-H [data-f="eta"]'))
            return "REFLASHED" in text(driver, "#slot-H .outcome")

        until(finished, 60, "REFLASHED")
        assert len(seen) >= 3, seen
        assert any(r.endswith("left") and "/s " in r for r in rates), rates  # the rate and the time left
        assert text(driver, "#slot-H .outcome").startswith("✔ REFLASHED")
        until(lambda: text(driver, '#order [data-o="done"]') == "2", 10, "order done count")

        # The station goes away: the page says so at once.
        station.kill()
        until(lambda: "LOST THE STATION" in text(driver, "#link-text"), 3, "lost-station banner")
        assert "lost" in str(driver.find_element(By.TAG_NAME, "body").get_attribute("class"))


def test_a_page_whose_session_ended_goes_to_sign_in_instead_of_reconnecting_for_ever(bench: Bench) -> None:
    """A station that restarts forgets its sessions; an operator removed is signed out. The page's stream is then
    refused (401), which a browser's EventSource never retries: the page must notice and ask for a sign-in."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    station = start_station(bench, refused_hub=False, listen=f"127.0.0.1:{port}")
    with chromium() as driver:
        sign_in(driver, station.url, "olive", PINS["olive"])
        station.kill()
        until(lambda: "LOST THE STATION" in text(driver, "#link-text"), 3, "lost-station banner")
        again = PageStation(station.bench, station.config, station.bench.station(station.config), station.events,
                            station.url)  # fmt: skip
        Events(again.process).wait_for("web_listening", within=30)
        until(lambda: "/sign-in" in driver.current_url, 15, "the sign-in form")
        assert "session has ended" in text(driver, "#sign-in-notice")
        sign_in(driver, station.url, "olive", PINS["olive"])

        # Removed from the roster while watching: the stream ends and the page asks for a sign-in.
        assert reflash(station.config, "operators", "remove", "olive").returncode == 0
        until(lambda: "/sign-in" in driver.current_url, 15, "the sign-in form after removal")
        again.kill()
