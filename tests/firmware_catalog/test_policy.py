"""Every reason code, produced from real files: keys generated here, images signed, catalogs built and loaded."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from firmware_catalog.errors import CatalogRefused
from firmware_catalog.hub import HubIdentity
from firmware_catalog.image import build_signed_image, parse_image
from firmware_catalog.policy import decide
from firmware_catalog.reason import RULES, ReasonCode
from firmware_catalog.signature_scope import DEFAULT_SCOPE
from tests.firmware_catalog.conftest import NOW, World

Hub = Callable[..., HubIdentity]


def pathway(world: World) -> None:
    """1.0 -> 1.1 -> 1.2 for 121D/0000, hardware 1111..1211."""
    world.image(version="01010000", upgrade_from=["01000000"])
    world.image(version="01020000", upgrade_from=["01010000"])


def test_ok_carries_the_checked_image(world: World, hub: Hub) -> None:
    world.image(version="01010000", upgrade_from=["01000000"])
    world.build()
    decision = decide(hub(), world.load(), NOW)
    assert decision.code is ReasonCode.OK
    assert decision.flash
    assert decision.entry is not None
    assert decision.entry.firmware_version == "01010000"
    assert decision.image is not None
    assert decision.image.raw == (world.root / "catalog" / decision.entry.image).read_bytes()


def test_multi_step_pathway_takes_the_newest_reachable_step(world: World, hub: Hub) -> None:
    pathway(world)
    world.build()
    catalog = world.load()
    first = decide(hub(firmware_version="01000000"), catalog, NOW)
    assert (first.code, first.entry and first.entry.firmware_version) == (ReasonCode.OK, "01010000")
    second = decide(hub(firmware_version="01010000"), catalog, NOW)
    assert (second.code, second.entry and second.entry.firmware_version) == (ReasonCode.OK, "01020000")


def test_already_current(world: World, hub: Hub) -> None:
    pathway(world)
    world.build()
    assert decide(hub(firmware_version="01020000"), world.load(), NOW).code is ReasonCode.ALREADY_CURRENT


def test_unknown_model(world: World, hub: Hub) -> None:
    pathway(world)
    world.build()
    assert decide(hub(model="0001"), world.load(), NOW).code is ReasonCode.UNKNOWN_MODEL
    assert decide(hub(manufacturer="1072"), world.load(), NOW).code is ReasonCode.UNKNOWN_MODEL


def test_not_on_upgrade_path(world: World, hub: Hub) -> None:
    pathway(world)
    world.build()
    assert decide(hub(firmware_version="00900000"), world.load(), NOW).code is ReasonCode.NOT_ON_UPGRADE_PATH


def test_downgrade_refused_compares_unsigned_octets(world: World, hub: Hub) -> None:
    # F0000000 would be negative as a signed 32-bit number; it must still count as newer than 01020000.
    pathway(world)
    world.build()
    decision = decide(hub(firmware_version="F0000000"), world.load(), NOW)
    assert decision.code is ReasonCode.DOWNGRADE_REFUSED


def test_downgrade_refused_even_when_the_pathway_lists_the_hub(world: World, hub: Hub) -> None:
    world.image(version="01010000", upgrade_from=["01020000"])
    world.build()
    assert decide(hub(firmware_version="01020000"), world.load(), NOW).code is ReasonCode.DOWNGRADE_REFUSED


def test_hardware_out_of_range(world: World, hub: Hub) -> None:
    pathway(world)
    world.build()
    assert decide(hub(hardware_version="1212"), world.load(), NOW).code is ReasonCode.HARDWARE_OUT_OF_RANGE
    assert decide(hub(hardware_version="1110"), world.load(), NOW).code is ReasonCode.HARDWARE_OUT_OF_RANGE


def test_target_past_ivp(world: World, hub: Hub) -> None:
    world.image(version="01010000", upgrade_from=["01000000"], installation_validity_end=date(2026, 11, 22))
    world.build()
    assert decide(hub(), world.load(), NOW).code is ReasonCode.TARGET_PAST_IVP


def test_ivp_ending_today_is_still_valid(world: World, hub: Hub) -> None:
    world.image(version="01010000", upgrade_from=["01000000"], installation_validity_end=NOW.date())
    world.build()
    assert decide(hub(), world.load(), NOW).code is ReasonCode.OK


def test_withdrawn_entry_is_no_candidate(world: World, hub: Hub) -> None:
    world.image(version="01010000", upgrade_from=["01000000"])
    world.image(version="01020000", upgrade_from=["01000000"], status="withdrawn")
    world.build()
    decision = decide(hub(), world.load(), NOW)
    assert decision.code is ReasonCode.OK
    assert decision.entry is not None
    assert decision.entry.firmware_version == "01010000"


def test_cpl_entry_withdrawn(world: World, hub: Hub) -> None:
    world.image(version="01010000", upgrade_from=["01000000"], status="withdrawn")
    world.build()
    assert decide(hub(), world.load(), NOW).code is ReasonCode.CPL_ENTRY_WITHDRAWN


def test_certificate_expired(world: World, hub: Hub) -> None:
    world.image(version="01010000", upgrade_from=["01000000"], certificate_expiry=date(2026, 1, 1))
    world.build()
    assert decide(hub(), world.load(), NOW).code is ReasonCode.CERTIFICATE_EXPIRED


def test_image_missing(world: World, hub: Hub) -> None:
    entry = world.image(version="01010000", upgrade_from=["01000000"])
    world.build()
    (world.root / "catalog" / f"images/121D-0000-{entry['firmware_version']}.bin").unlink()
    assert decide(hub(), world.load(), NOW).code is ReasonCode.IMAGE_MISSING


def _catalog_image(world: World) -> tuple[World, bytearray]:
    world.image(version="01010000", upgrade_from=["01000000"])
    world.build()
    return world, bytearray((world.root / "catalog/images/121D-0000-01010000.bin").read_bytes())


def _replace(world: World, data: bytes) -> None:
    (world.root / "catalog/images/121D-0000-01010000.bin").write_bytes(data)


def test_malformed_image(world: World, hub: Hub) -> None:
    world, data = _catalog_image(world)
    data[0] ^= 0xFF
    _replace(world, bytes(data))
    decision = decide(hub(), world.load(), NOW)
    assert decision.code is ReasonCode.MALFORMED_IMAGE
    assert "magic at byte 0" in decision.message


def test_image_hash_mismatch(world: World, hub: Hub) -> None:
    world, data = _catalog_image(world)
    data[100] ^= 0x01
    _replace(world, bytes(data))
    assert decide(hub(), world.load(), NOW).code is ReasonCode.IMAGE_HASH_MISMATCH


def test_image_header_mismatch(world: World, hub: Hub) -> None:
    world, data = _catalog_image(world)
    data[57] = 0x10  # min hardware version 1111 -> 1011: still a valid layout, but not what the CPL entry says
    _replace(world, bytes(data))
    assert decide(hub(), world.load(), NOW).code is ReasonCode.IMAGE_HEADER_MISMATCH


def test_signature_invalid(world: World, hub: Hub) -> None:
    world, data = _catalog_image(world)
    data[-1] ^= 0x01
    _replace(world, bytes(data))
    assert decide(hub(), world.load(), NOW).code is ReasonCode.SIGNATURE_INVALID


def test_signature_invalid_when_control_byte_changes(world: World, hub: Hub) -> None:
    world, data = _catalog_image(world)
    data[-66] ^= 0x01  # the control byte is signed but not hashed into the Manufacturer Image Hash
    _replace(world, bytes(data))
    assert decide(hub(), world.load(), NOW).code is ReasonCode.SIGNATURE_INVALID


def _envelope(world: World, signer: str = "maker", **changes: object) -> bytes:
    """Another Upgrade Image of the same Manufacturer Image as the catalog's 01010000 entry, signed by `signer`."""
    fields: dict[str, Any] = {
        "manufacturer": 0x121D,
        "image_type": 0x0000,
        "file_version": 0x01010000,
        "min_hardware_version": 0x1111,
        "max_hardware_version": 0x1211,
        "manufacturer_image": hashlib.sha256(b"01010000").digest() * 64,  # World.image's default body
    }
    fields.update(changes)
    return build_signed_image(world.key(signer), **fields)


def test_ok_pins_the_whole_file(world: World, hub: Hub) -> None:
    world.image(version="01010000", upgrade_from=["01000000"])
    world.build()
    decision = decide(hub(), world.load(), NOW)
    assert decision.code is ReasonCode.OK
    assert decision.entry is not None
    assert decision.image is not None
    assert decision.entry.upgrade_image_sha256 == hashlib.sha256(decision.image.raw).hexdigest()
    assert decision.describe()["target"]["upgrade_image_sha256"] == decision.entry.upgrade_image_sha256


@pytest.mark.parametrize(
    "changes",
    [{"header_string": "another build"}, {"control": 1}, {}],
    ids=["header-string", "control-byte", "fresh-signature"],
)
def test_image_file_mismatch_for_another_envelope_of_the_same_firmware(
    world: World, hub: Hub, changes: dict[str, Any]
) -> None:
    """Same Manufacturer Image, same header fields, validly signed by the trusted key: still not the approved file.
    (ECDSA signatures are randomised, so even re-signing the same bytes makes another file.)"""
    world, original = _catalog_image(world)
    other = _envelope(world, **changes)
    image = parse_image(other)
    assert image.manufacturer_image_sha256 == parse_image(bytes(original)).manufacturer_image_sha256
    assert image.verify(world.key("maker").public_key(), DEFAULT_SCOPE)
    assert other != bytes(original)
    _replace(world, other)
    decision = decide(hub(), world.load(), NOW)
    assert decision.code is ReasonCode.IMAGE_FILE_MISMATCH
    assert "Upgrade Image SHA-256 (the whole file)" in decision.message
    assert decision.image is None


def test_envelope_signed_by_another_trusted_key_is_refused(world: World, hub: Hub) -> None:
    """The catalog's signer is the one the build found; a second key trusted for the maker does not stand in."""
    world.trust("second", "121D")
    world, _ = _catalog_image(world)
    _replace(world, _envelope(world, signer="second"))
    decision = decide(hub(), world.load(), NOW)
    assert decision.code is ReasonCode.SIGNATURE_INVALID
    assert decision.image is None


def test_untrusted_key_unknown_signer(world: World, hub: Hub) -> None:
    world.image(version="01010000", upgrade_from=["01000000"], signer="rogue")
    report = world.build()
    assert any("signed by no listed key" in w for w in report.warnings)
    assert decide(hub(), world.load(), NOW).code is ReasonCode.UNTRUSTED_KEY


def test_untrusted_key_bound_to_another_manufacturer(world: World, hub: Hub) -> None:
    world.trust("other", "1072")
    world.image(version="01010000", upgrade_from=["01000000"], signer="other")
    world.build()
    decision = decide(hub(), world.load(), NOW)
    assert decision.code is ReasonCode.UNTRUSTED_KEY
    assert "not for 121D" in decision.message


def test_key_revoked(world: World, hub: Hub) -> None:
    world.revoke("retired")
    world.image(version="01010000", upgrade_from=["01000000"], signer="retired")
    world.build()
    assert decide(hub(), world.load(), NOW).code is ReasonCode.KEY_REVOKED


def test_key_revoked_wins_over_trusted(world: World, hub: Hub) -> None:
    world.revoke("maker")
    world.image(version="01010000", upgrade_from=["01000000"])
    world.build()
    assert decide(hub(), world.load(), NOW).code is ReasonCode.KEY_REVOKED


def test_catalog_expired_freezes_decisions(world: World, hub: Hub) -> None:
    pathway(world)
    world.build()
    catalog = world.load()
    later = NOW + timedelta(days=31)
    assert decide(hub(), catalog, later).code is ReasonCode.CATALOG_EXPIRED
    with pytest.raises(CatalogRefused) as caught:
        world.load(now=later)
    assert caught.value.code is ReasonCode.CATALOG_EXPIRED


def test_catalog_signature_invalid(world: World) -> None:
    pathway(world)
    world.build()
    doc = world.root / "catalog/catalog.json"
    doc.write_text(doc.read_text().replace('"status": "active"', '"status": "active" '))
    with pytest.raises(CatalogRefused) as caught:
        world.load()
    assert caught.value.code is ReasonCode.CATALOG_SIGNATURE_INVALID


def test_catalog_signed_by_another_authority_is_refused(world: World) -> None:
    from firmware_catalog.catalog import load_catalog
    from firmware_catalog.keys import generate_key

    pathway(world)
    world.build()
    with pytest.raises(CatalogRefused) as caught:
        load_catalog(world.root / "catalog", generate_key().public_key(), NOW)
    assert caught.value.code is ReasonCode.CATALOG_SIGNATURE_INVALID


def test_catalog_rollback(world: World) -> None:
    from firmware_catalog.catalog import CatalogPin, load_catalog

    pathway(world)
    world.serial = 5
    world.build("new")
    world.serial = 4
    world.build("old")
    accepted = world.load("new")
    with pytest.raises(CatalogRefused) as caught:
        load_catalog(world.root / "old", world.authority.public_key(), NOW, accepted.pin)
    assert caught.value.code is ReasonCode.CATALOG_ROLLBACK
    # The same serial with other content is a replay too.
    world.serial = 5
    world.entries[0]["status"] = "withdrawn"
    world.build("same-serial")
    with pytest.raises(CatalogRefused) as caught:
        load_catalog(world.root / "same-serial", world.authority.public_key(), NOW, accepted.pin)
    assert caught.value.code is ReasonCode.CATALOG_ROLLBACK
    # Reloading the very catalog already accepted is fine.
    assert load_catalog(world.root / "new", world.authority.public_key(), NOW, CatalogPin(5, accepted.digest))


def test_every_code_in_rules_is_a_reason_code_and_tested_here() -> None:
    here = Path(__file__).parent
    source = (here / "test_policy.py").read_text() + (here / "test_catalog.py").read_text()
    for rule in RULES:
        assert f"ReasonCode.{rule.code.value}" in source, f"no test produces {rule.code.value}"
    assert {rule.code for rule in RULES} == set(ReasonCode)
