"""The real Upgrade Image from the DCC's public SR 11.1 DUIS template, parsed byte-exact."""

from __future__ import annotations

import hashlib
from pathlib import Path

from firmware_catalog.image import HEADER_LENGTH, read_image

SAMPLE = Path(__file__).parent / "data" / "duis-sr11.1-upgrade-image.bin"


def test_sample_header_fields_byte_exact() -> None:
    image = read_image(SAMPLE)
    raw = SAMPLE.read_bytes()
    assert image.raw == raw
    assert image.describe() | {"signature": None} == {
        "manufacturer": "121D",
        "image_type": "0000",
        "file_version": "ACDCACDC",
        "stack_version": "0002",
        "min_hardware_version": "1111",
        "max_hardware_version": "1211",
        "header_string": "I am a GFI ESME[] firmware image",
        "total_size": 361,
        "manufacturer_image_size": 235,
        "manufacturer_image_sha256": hashlib.sha256(raw[60:295]).hexdigest(),
        "control": 0,
        "signature": None,
    }
    assert image.manufacturer_image == raw[HEADER_LENGTH : HEADER_LENGTH + 235]
    assert image.manufacturer_image.startswith(b"CriticalSoftware sample firmware image_")
    assert raw[296] == 0x40
    assert image.signature == raw[297:]
    assert len(image.signature) == 64
    assert image.signed_bytes == raw[:296]
