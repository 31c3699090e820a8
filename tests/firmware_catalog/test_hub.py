"""Device IDs in the DUIS form, and the identity a hub reports."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_catalog.hub import HubIdentity, format_eui64, normalise_eui64


@given(st.integers(0, 2**64 - 1))
def test_format_and_normalise_agree(value: int) -> None:
    text = format_eui64(value)
    assert len(text) == 23
    assert normalise_eui64(text.lower().replace("-", "")) == text
    assert int(text.replace("-", ""), 16) == value


def test_format_refuses_more_than_64_bits() -> None:
    with pytest.raises(ValueError, match="64 bits"):
        format_eui64(2**64)


@pytest.mark.parametrize("bad", ["00-DB-12", "00DB1234567890A", "GG-DB-12-34-56-78-90-A0", ""])
def test_bad_device_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="EUI-64"):
        normalise_eui64(bad)


def test_identity_uppercases_codes_and_normalises_ids() -> None:
    hub = HubIdentity(
        manufacturer="121d", model="0000", hardware_version="12ab", firmware_version="0102abcd",
        chf_id="00db1234567890a0",
    )  # fmt: skip
    assert (hub.manufacturer, hub.hardware_version, hub.firmware_version) == ("121D", "12AB", "0102ABCD")
    assert hub.chf_id == "00-DB-12-34-56-78-90-A0"
