"""Building, loading and holding the signed catalog: what is refused, how it is reported, what is kept."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_catalog.catalog import CatalogHolder, load_catalog
from firmware_catalog.catalog_source import build_catalog, read_source
from firmware_catalog.errors import CatalogError, CatalogFormatError, CatalogRefused
from firmware_catalog.keys import generate_key, sign_raw
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
    with pytest.raises(CatalogError, match=r"holds precious\.txt, which a catalog build does not write"):
        world.build()
    assert (world.root / "catalog/precious.txt").read_text() == "keep me"


def test_build_refuses_a_folder_with_a_stray_catalog_json_beside_other_files(world: World) -> None:
    world.image(version="01010000", upgrade_from=["01000000"])
    folder = world.root / "catalog"
    (folder / "keys").mkdir(parents=True)
    (folder / "catalog.json").write_text("{}")
    (folder / "notes.txt").write_text("the operator's notes")
    (folder / "keys/authority.key").write_text("a key copy")
    with pytest.raises(CatalogError, match=r"holds keys, notes\.txt, which a catalog build does not write"):
        world.build()
    assert (folder / "notes.txt").read_text() == "the operator's notes"
    assert (folder / "keys/authority.key").read_text() == "a key copy"
    assert (folder / "catalog.json").read_text() == "{}"


def test_build_replaces_a_catalog_it_built(world: World) -> None:
    world.image(version="01010000", upgrade_from=["01000000"])
    world.build()
    world.build()
    assert world.load().serial == 1


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


def _resign(world: World, raw: bytes, out: str = "catalog") -> None:
    """Replace catalog.json with `raw`, signed by the real authority key: only the schema stands in the way."""
    (world.root / out / "catalog.json").write_bytes(raw)
    (world.root / out / "catalog.sig").write_bytes(sign_raw(world.authority, raw))


def _built(world: World) -> dict[str, Any]:
    world.image(version="01010000", upgrade_from=["01000000"])
    world.build()
    data: dict[str, Any] = json.loads((world.root / "catalog/catalog.json").read_text())
    return data


def test_built_catalog_is_format_2_and_pins_the_whole_image(world: World) -> None:
    data = _built(world)
    assert data["format"] == "reflash-catalog/2"
    (entry,) = data["entries"]
    image = (world.root / "catalog" / entry["image"]).read_bytes()
    assert entry["upgrade_image_sha256"] == hashlib.sha256(image).hexdigest()
    assert entry["manufacturer_image_sha256"] == hashlib.sha256(image[60:-66]).hexdigest()
    assert world.load().document.entries[0].upgrade_image_sha256 == entry["upgrade_image_sha256"]


def test_format_1_catalog_is_refused_with_rebuild_advice(world: World) -> None:
    data = _built(world)
    data["format"] = "reflash-catalog/1"
    del data["entries"][0]["upgrade_image_sha256"]
    _resign(world, json.dumps(data).encode())
    with pytest.raises(CatalogFormatError) as caught:
        world.load()
    assert caught.value.where == "format"
    assert "reflash-catalog/1 is no longer loaded" in str(caught.value)
    assert "reflash catalog build" in str(caught.value)
    assert "higher serial" in str(caught.value)
    offer = CatalogHolder(world.authority.public_key()).offer(world.root / "catalog", NOW)
    assert (offer.accepted, offer.code) == (False, ReasonCode.CATALOG_MALFORMED)


def test_entry_without_the_whole_image_pin_is_malformed(world: World) -> None:
    data = _built(world)
    del data["entries"][0]["upgrade_image_sha256"]
    _resign(world, json.dumps(data).encode())
    with pytest.raises(CatalogFormatError, match=r"entries\[0\]\.upgrade_image_sha256: Field required"):
        world.load()


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('"serial": 1,', "serial"),
        ('"status": "withdrawn",', "entries[0].status"),
        ('"id": "maker",', "keys[0].id"),
    ],
)
def test_repeated_key_is_malformed_and_named(world: World, text: str, where: str) -> None:
    """json keeps the last of two equal keys; a reviewer may read the first. Either way the catalog is refused."""
    _built(world)
    raw = (world.root / "catalog/catalog.json").read_text()
    key = text.split(":")[0]
    at = raw.index(f"{key}:")
    _resign(world, (raw[:at] + text + raw[at:]).encode())
    with pytest.raises(CatalogFormatError) as caught:
        world.load()
    assert caught.value.where == where
    assert "given more than once" in str(caught.value)
    offer = CatalogHolder(world.authority.public_key()).offer(world.root / "catalog", NOW)
    assert (offer.accepted, offer.code) == (False, ReasonCode.CATALOG_MALFORMED)


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (("serial",), True, "serial"),
        (("serial",), "7", "serial"),
        (("serial",), 1.0, "serial"),
        (("entries", 0, "firmware_version"), 16908288, "entries[0].firmware_version"),
        (("entries", 0, "upgrade_from"), "01000000", "entries[0].upgrade_from"),
        (("keys", 0, "manufacturers", 0), 4637, "keys[0].manufacturers[0]"),
        (("revoked_keys",), None, "revoked_keys"),
        (("entries", 0, "installation_validity_end"), 20311231, "entries[0].installation_validity_end"),
        (("expires_at",), 1700000000, "expires_at"),
    ],
)
def test_wrong_json_type_is_malformed_and_named(
    world: World, path: tuple[str | int, ...], value: object, where: str
) -> None:
    data = _built(world)
    target: Any = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    _resign(world, json.dumps(data).encode())
    with pytest.raises(CatalogFormatError) as caught:
        world.load()
    assert caught.value.where == where


def test_dates_and_times_given_as_json_strings_load(world: World) -> None:
    data = _built(world)
    assert isinstance(data["expires_at"], str)
    assert isinstance(data["entries"][0]["certificate_expiry"], str)
    data["expires_at"] = "2026-12-01T00:00:00+01:00"
    _resign(world, json.dumps(data).encode())
    catalog = world.load()
    assert catalog.document.expires_at == datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
    assert catalog.document.entries[0].certificate_expiry == date(2030, 6, 30)


def test_key_that_is_not_pem_is_malformed_not_a_key_error(world: World) -> None:
    data = _built(world)
    data["keys"][0]["public_key_pem"] = "not a key \u00e9"
    _resign(world, json.dumps(data).encode())
    with pytest.raises(CatalogFormatError) as caught:
        world.load()
    assert caught.value.where == "keys[0].public_key_pem"


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=6,
    )


def _paths(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@st.composite
def _mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """A catalog document changed the way a buggy or hostile authority tool might change it."""
    data = json.loads(original)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        parent: Any = data
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(_json_values())
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(_json_values())
        else:
            parent.append(draw(_json_values()))
    text = json.dumps(data, indent=draw(st.sampled_from([None, 2])), sort_keys=draw(st.booleans()))
    how = draw(st.sampled_from(["as-is", "repeat-a-key", "cut", "splice"]))
    if how == "repeat-a-key":
        at = draw(st.sampled_from([m.start() for m in re.finditer(r'"\w+": ', text)] or [0]))
        end = text.find(",", at)
        if end > at:
            text = text[:at] + text[at : end + 1] + text[at:]
    elif how == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif how == "splice":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(max_size=6)) + text[at:]
    return text.encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def built_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    world = World(root=tmp_path_factory.mktemp("mutations"), authority=generate_key())
    world.trust("maker", "121D")
    world.revoke("retired")
    world.image(version="01010000", upgrade_from=["01000000"])
    world.image(version="01020000", upgrade_from=["01010000"], signer="retired")
    world.build()
    return world


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_signed_catalogs_load_or_are_refused_cleanly(built_world: World, data: st.DataObject) -> None:
    """Whatever the authority signs, loading gives a catalog, CatalogFormatError or CatalogRefused: nothing else."""
    original = (built_world.root / "catalog/catalog.json").read_bytes()
    raw = data.draw(_mutated(original))
    folder = built_world.root / "mutated"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "catalog.json").write_bytes(raw)
    (folder / "catalog.sig").write_bytes(sign_raw(built_world.authority, raw))
    try:
        catalog = load_catalog(folder, built_world.authority.public_key(), NOW)
    except (CatalogFormatError, CatalogRefused):
        return
    assert catalog.document.format == "reflash-catalog/2"
    assert isinstance(catalog.serial, int)
    assert not isinstance(catalog.serial, bool)
