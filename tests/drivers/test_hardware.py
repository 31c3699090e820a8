"""Against a real jig with a hub on it: opt in with `pytest --hardware` and REFLASH_HW_URL (any jig URL)."""

from __future__ import annotations

import os

import pytest

from drivers.url_jig import UrlJig

pytestmark = pytest.mark.hardware


async def test_a_real_hub_identifies_itself() -> None:
    url = os.environ.get("REFLASH_HW_URL")
    if not url:
        pytest.fail("set REFLASH_HW_URL to the jig's URL, e.g. /dev/ttyUSB0 or usb://1209:0001?serial=...")
    driver = UrlJig.from_config({"url": url})
    try:
        identity = await driver.identify()
    finally:
        await driver.close()
    assert identity.chf_id is not None
    assert identity.gpf_id is not None
    assert len(identity.firmware_version) == 8
