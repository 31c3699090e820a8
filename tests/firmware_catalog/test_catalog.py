"""Building, loading and holding the signed catalog: what is refused, how it is reported, what is kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware_catalog.catalog import CatalogHolder
from firmware_catalog.catalog_source import build_catalog, read_source
from firmware_catalog.errors import CatalogFormatError
from firmware_catalog.keys import sign_raw
from firmware_catalog.reason import ReasonCode
from tests.firmware_catalog.conftest import NOW, World, timedelta


def test_built_catalog_holds_keys_entries_and_signers(world: World) -> None:
    world.image(version="01010000", upgrade_from=["01000000"])
    world.build()
    catalog = world.load()
    assert catalog.serial == 1
    assert catalog.document.expires_at == NOW + timedelta(days=30)
    (entry,) = catalog.document.entries
    assert entry.signed_by == catalog.document.keys[0].fingerprint
    assert entry.image == "images/121D-0000-01010000.bin"
    assert (world.root / "catalog" / entry.image).exists()
    assert not list(world.root.glob(".catalog.*")), "the staging folder was left behind"


def test_holder_keeps_the_last_good_catalog(world: World) -> None:
    world.image(version="01010000", upgrade_from=["01000000"])
    world.serial = 3
    world.build("good")
    holder = CatalogHolder(world.authority.public_key())
    assert holder.offer(world.root / "good", NOW).accepted
    good = holder.current

    world.serial = 2
    world.build("older")
    offer = holder.offer(world.root / "older", NOW)
    assert (offer.accepted, offer.code) == (False, ReasonCode.CATALOG_ROLLBACK)
    assert holder.current is good

    world.serial = 4
    world.build("tampered")
    (world.root / "tampered/catalog.sig").write_bytes(bytes(64))
    offer = holder.offer(world.root / "tampered", NOW)
    assert (offer.accepted, offer.code) == (False, ReasonCode.CATALOG_SIGNATURE_INVALID)
    assert holder.current is good

    offer = holder.offer(world.root / "good", NOW + timedelta(days=40))
    assert (offer.accepted, offer.code) == (False, ReasonCode.CATALOG_EXPIRED)
    assert holder.current is good

    world.serial = 5
    world.build("newer")
    assert holder.offer(world.root / "newer", NOW).accepted
    assert holder.current is not None
    assert holder.current.serial == 5
    assert holder.pin is not None
    assert holder.pin.serial == 5


def test_signed_but_malformed_catalog_is_refused(world: World) -> None:
    """An authority that signs garbage still gets nothing past the schema: CATALOG_MALFORMED, old one kept."""
    world.image(version="01010000", upgrade_from=["01000000"])
    world.build()
    holder = CatalogHolder(world.authority.public_key())
    assert holder.offer(world.root / "catalog", NOW).accepted
    doc = world.root / "catalog/catalog.json"
    data = json.loads(doc.read_text())
    data["serial"] = 9
    data["entries"][0]["firmware_version"] = "1.2.3"
    raw = json.dumps(data).encode()
    doc.write_bytes(raw)
    (world.root / "catalog/catalog.sig").write_bytes(sign_raw(world.authority, raw))
    offer = holder.offer(world.root / "catalog", NOW)
    assert (offer.accepted, offer.code) == (False, ReasonCode.CATALOG_MALFORMED)
    assert "entries[0].firmware_version" in offer.message
    assert holder.current is not None
    assert holder.current.serial == 1


def test_missing_catalog_folder_is_malformed_not_a_crash(tmp_path: Path, world: World) -> None:
    holder = CatalogHolder(world.authority.public_key())
    offer = holder.offer(tmp_path / "nowhere", NOW)
    assert (offer.accepted, offer.code) == (False, ReasonCode.CATALOG_MALFORMED)


def test_build_refuses_a_hash_that_differs_from_the_image(world: World) -> None:
    world.image(version="01010000", upgrade_from=["01000000"], manufacturer_image_sha256="ab" * 32)
    with pytest.raises(CatalogFormatError) as caught:
        world.build()
    assert "entries[0] (CPL-121D-0000-01010000)" in str(caught.value)
    assert "SHA-256" in str(caught.value)


def test_build_refuses_a_header_that_differs_from_the_entry(world: World) -> None:
    world.image(version="01010000", upgrade_from=["01000000"], max_hardware_version="1300")
    with pytest.raises(CatalogFormatError, match="max_hardware_version is 1211, the entry says 1300"):
        world.build()


def test_build_refuses_a_missing_image(world: World) -> None:
    world.image(version="01010000", upgrade_from=["01000000"], image="images/nope.bin")
    with pytest.raises(CatalogFormatError, match=r"entries\[0\] \(CPL-121D-0000-01010000\)\.image: .*nope\.bin"):
        world.build()


def test_build_refuses_a_malformed_image_with_field_and_offset(world: World) -> None:
    entry = world.image(version="01010000", upgrade_from=["01000000"])
    path = world.root / entry["image"]
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CatalogFormatError, match="header_string at byte 20: truncated"):
        world.build()


def test_failed_build_leaves_the_previous_catalog_whole(world: World) -> None:
    world.image(version="01010000", upgrade_from=["01000000"])
    world.build()
    before = {p.name: p.read_bytes() for p in (world.root / "catalog").rglob("*") if p.is_file()}
    world.serial = 2
    world.image(version="01020000", upgrade_from=["01010000"], manufacturer_image_sha256="00" * 32)
    with pytest.raises(CatalogFormatError):
        world.build()
    after = {p.name: p.read_bytes() for p in (world.root / "catalog").rglob("*") if p.is_file()}
    assert after == before
    assert world.load().serial == 1


def test_build_refuses_to_replace_a_folder_that_is_not_a_catalog(world: World) -> None:
    world.image(version="01010000", upgrade_from=["01000000"])
    (world.root / "catalog").mkdir()
    (world.root / "catalog/precious.txt").write_text("keep me")
    with pytest.raises(Exception, match="not a catalog folder"):
        world.build()
    assert (world.root / "catalog/precious.txt").read_text() == "keep me"


def test_source_schema_error_names_file_line_and_field(world: World) -> None:
    world.image(version="01010000", upgrade_from=["01000000"])
    world.image(version="01020000", upgrade_from=["01010000"], firmware_version="1.2")
    path = world.write_source()
    with pytest.raises(CatalogFormatError) as caught:
        read_source(path)
    lines = path.read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.startswith('firmware_version = "1.2"'))
    assert str(caught.value).startswith(f"{path}: line {line}: entries[1].firmware_version")
    assert "8 hex digits" in str(caught.value)


def test_source_toml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('serial = 1\nvalid_days = 30\n[[keys]\nid = "x"\n')
    with pytest.raises(CatalogFormatError, match=r"bad\.toml: not valid TOML: .*line 3"):
        read_source(path)


def test_source_needs_exactly_one_expiry(world: World) -> None:
    world.image(version="01010000", upgrade_from=["01000000"])
    path = world.write_source()
    path.write_text(path.read_text().replace("valid_days = 30", ""))
    with pytest.raises(CatalogFormatError, match="exactly one of 'expires'"):
        read_source(path)


def test_source_with_a_bad_key_file_names_it(world: World) -> None:
    world.image(version="01010000", upgrade_from=["01000000"])
    (world.root / "keys/maker.pub").write_text("not a key")
    with pytest.raises(CatalogFormatError, match=r"keys\[0\]\.public_key: .*maker\.pub: not a SubjectPublicKeyInfo"):
        build_catalog(world.write_source(), world.authority, world.root / "catalog", NOW)


def test_duplicate_entries_are_refused(world: World) -> None:
    world.image(version="01010000", upgrade_from=["01000000"])
    world.image(version="01010000", upgrade_from=["01000000"], cpl_id="CPL-dup")
    with pytest.raises(CatalogFormatError, match="listed twice"):
        world.build()


def test_source_from_committed_example_parses() -> None:
    source = read_source(Path(__file__).parents[2] / "config/catalog/example.toml")
    assert {e.manufacturer for e in source.entries} == {"121D", "1072"}
