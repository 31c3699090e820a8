"""The real Upgrade Image from the DCC's public SR 11.1 DUIS template, parsed byte-exact."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

from firmware_catalog.hub import HubIdentity
from firmware_catalog.image import HEADER_LENGTH, read_image
from firmware_catalog.policy import decide
from firmware_catalog.reason import ReasonCode
from firmware_catalog.signature_scope import DEFAULT_SCOPE, SignatureScope
from tests.firmware_catalog.conftest import NOW, World

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
        "upgrade_image_sha256": hashlib.sha256(raw).hexdigest(),
        "control": 0,
        "signature": None,
    }
    assert image.manufacturer_image == raw[HEADER_LENGTH : HEADER_LENGTH + 235]
    assert image.manufacturer_image.startswith(b"CriticalSoftware sample firmware image_")
    assert raw[296] == 0x40
    assert image.signature == raw[297:]
    assert len(image.signature) == 64
    assert image.signed_bytes(DEFAULT_SCOPE) == raw[:296]
    assert image.signed_bytes(SignatureScope.MANUFACTURER_IMAGE) == raw[HEADER_LENGTH:295]


def test_sample_is_refused_as_untrusted_by_the_policy(world: World) -> None:
    """Nobody outside the DCC's test tooling holds the sample's key: a catalog listing it must refuse it."""
    raw = SAMPLE.read_bytes()
    (world.root / "images").mkdir()
    (world.root / "images/sample.bin").write_bytes(raw)
    world.entries.append(
        {
            "cpl_id": "CPL-SAMPLE",
            "manufacturer": "121D",
            "model": "0000",
            "firmware_version": "ACDCACDC",
            "min_hardware_version": "1111",
            "max_hardware_version": "1211",
            "manufacturer_image_sha256": hashlib.sha256(raw[60:295]).hexdigest(),
            "chts_version": "V1.3",
            "installation_validity_end": date(2031, 12, 31),
            "maintenance_end": date(2034, 12, 31),
            "upgrade_from": ["01000000"],
            "status": "active",
            "certificate_expiry": date(2030, 6, 30),
            "image": "images/sample.bin",
        }
    )
    report = world.build()
    assert report.warnings
    hub = HubIdentity(manufacturer="121D", model="0000", hardware_version="1200", firmware_version="01000000")
    decision = decide(hub, world.load(), NOW)
    assert decision.code is ReasonCode.UNTRUSTED_KEY
    assert not decision.flash
