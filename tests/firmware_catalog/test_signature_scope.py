"""The signature scope of each manufacturer key (issue 15): stated in the catalog, read wherever a manufacturer
signature is checked, the default when left out, and the whole-file pin covering what a scope leaves out."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_catalog.catalog import CATALOG_FILE, SIGNATURE_FILE
from firmware_catalog.catalog_source import read_source
from firmware_catalog.errors import CatalogFormatError
from firmware_catalog.hub import HubIdentity
from firmware_catalog.image import HEADER_FIELDS, HEADER_LENGTH, build_signed_image, parse_image
from firmware_catalog.keys import generate_key, sign_raw
from firmware_catalog.policy import decide
from firmware_catalog.reason import ReasonCode
from firmware_catalog.signature_scope import DEFAULT_SCOPE, SignatureScope
from tests.firmware_catalog.conftest import NOW, World

MI = SignatureScope.MANUFACTURER_IMAGE
KEY = generate_key()
Hub = Callable[..., HubIdentity]


def _image(body: bytes, scope: SignatureScope, header_string: str = "scope test", control: int = 0) -> bytes:
    return build_signed_image(
        KEY,
        manufacturer=0x121D,
        image_type=0,
        file_version=0x01020000,
        min_hardware_version=0x1111,
        max_hardware_version=0x1211,
        manufacturer_image=body,
        header_string=header_string,
        control=control,
        scope=scope,
    )


@settings(max_examples=25, deadline=None)
@given(body=st.binary(min_size=1, max_size=300), header_string=st.text("abcXYZ 09", max_size=32))
def test_each_scope_signs_its_own_bytes(body: bytes, header_string: str) -> None:
    image = parse_image(_image(body, MI, header_string))
    assert image.signed_bytes(MI) == body
    assert image.signed_bytes(DEFAULT_SCOPE) == image.raw[: HEADER_LENGTH + len(body) + 1]
    assert image.verify(KEY.public_key(), MI)
    assert not image.verify(KEY.public_key(), DEFAULT_SCOPE)
    assert image.scopes_signed_by(KEY.public_key()) == (MI,)
    default = parse_image(_image(body, DEFAULT_SCOPE, header_string))
    assert default.verify(KEY.public_key(), DEFAULT_SCOPE)
    assert not default.verify(KEY.public_key(), MI)


def test_header_and_control_are_outside_the_manufacturer_image_scope() -> None:
    """What the scope leaves out really is left out of the signature: that is why the catalog's pin matters."""
    body = bytes(range(200))
    one = parse_image(_image(body, MI, "first", control=0))
    other = bytearray(one.raw)
    other[HEADER_LENGTH + len(body)] = 1  # the control byte
    other[20] = ord("F")  # the header string
    assert parse_image(bytes(other)).verify(KEY.public_key(), MI)
    assert not parse_image(bytes(other)).verify(KEY.public_key(), DEFAULT_SCOPE)


def _world_signing_mi(world: World, stated: str | None) -> World:
    """A world whose maker signs over the Manufacturer Image alone; the source states `stated` for its key."""
    world.key_lines.clear()
    world.trust("maker", "121D", scope=stated)
    world.image(version="01020000", upgrade_from=["01000000"], scope=MI)
    return world


def test_a_manufacturer_image_signature_verifies_under_a_key_declared_so(world: World, hub: Hub) -> None:
    report = _world_signing_mi(world, "manufacturer-image").build()
    assert report.warnings == []
    catalog = world.load()
    (entry,) = catalog.document.entries
    assert entry.signed_by is not None
    assert catalog.key_scopes[entry.signed_by] is MI
    decision = decide(hub(), catalog, NOW)
    assert decision.code is ReasonCode.OK, decision.message


@pytest.mark.parametrize("stated", [None, "header-image-control"])
def test_the_same_image_is_refused_under_the_default_scope(world: World, hub: Hub, stated: str | None) -> None:
    """Left out or given, the default scope does not verify a signature over the Manufacturer Image alone: no listed
    key signs the image as the catalog states, so the build warns (naming the scope that would) and the policy
    refuses it UNTRUSTED_KEY."""
    report = _world_signing_mi(world, stated).build()
    (warning,) = report.warnings
    assert "signed by no listed key" in warning
    assert "key maker signs it over scope manufacturer-image, but the source gives header-image-control" in warning
    catalog = world.load()
    assert catalog.document.entries[0].signed_by is None
    decision = decide(hub(), catalog, NOW)
    assert decision.code is ReasonCode.UNTRUSTED_KEY


def _resign(world: World, edit: Callable[[dict[str, object]], None]) -> None:
    """Change the built catalog.json as an authority would and sign it again with the authority key."""
    folder = world.root / "catalog"
    document = json.loads((folder / CATALOG_FILE).read_text())
    edit(document)
    raw = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
    (folder / CATALOG_FILE).write_bytes(raw)
    (folder / SIGNATURE_FILE).write_bytes(sign_raw(world.authority, raw))


def test_the_policy_checks_the_scope_the_catalog_states_not_what_the_build_found(world: World, hub: Hub) -> None:
    """A catalog whose signed_by names the key but whose scope is the default: the station checks the signature over
    the default scope and refuses SIGNATURE_INVALID, naming the scope."""
    _world_signing_mi(world, "manufacturer-image").build()

    def drop_scope(document: dict[str, object]) -> None:
        keys = document["keys"]
        assert isinstance(keys, list)
        del keys[0]["scope"]

    _resign(world, drop_scope)
    catalog = world.load()
    assert catalog.document.keys[0].scope is DEFAULT_SCOPE  # no field: the default
    decision = decide(hub(), catalog, NOW)
    assert decision.code is ReasonCode.SIGNATURE_INVALID
    assert "scope header-image-control" in decision.message


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_byte_outside_the_signed_scope_is_caught_by_the_whole_image_pin(
    world: World, hub: Hub, data: st.DataObject
) -> None:
    """Under `manufacturer-image` the header string and the control byte are not signed: a change there keeps the
    signature valid and the Manufacturer Image Hash equal, and the catalog's pin of the whole file refuses it as
    IMAGE_FILE_MISMATCH."""
    if not (world.root / "catalog").exists():
        _world_signing_mi(world, "manufacturer-image").build()
    catalog = world.load()
    (entry,) = catalog.document.entries
    path = catalog.folder / entry.image
    original = path.read_bytes()
    header_string = next(f for f in HEADER_FIELDS if f.name == "header_string")
    control_at = len(original) - 66
    offset = data.draw(
        st.sampled_from([*range(header_string.offset, header_string.offset + header_string.size), control_at])
    )
    value = data.draw(st.integers(0, 255).filter(lambda v: v != original[offset]))
    changed = bytearray(original)
    changed[offset] = value
    try:
        path.write_bytes(bytes(changed))
        image = parse_image(bytes(changed))
        assert image.verify(world.key("maker").public_key(), MI)
        assert image.manufacturer_image_sha256 == entry.manufacturer_image_sha256
        decision = decide(hub(), catalog, NOW)
        assert decision.code is ReasonCode.IMAGE_FILE_MISMATCH, decision.message
    finally:
        path.write_bytes(original)
    assert decide(hub(), catalog, NOW).code is ReasonCode.OK


def test_a_revoked_key_is_recognised_over_its_own_scope(world: World, hub: Hub) -> None:
    world.key_lines.clear()
    world.trust("other", "121D")
    world.revoke("maker", scope="manufacturer-image")
    world.image(version="01020000", upgrade_from=["01000000"], scope=MI)
    assert world.build().warnings == []
    decision = decide(hub(), world.load(), NOW)
    assert decision.code is ReasonCode.KEY_REVOKED


def test_the_default_scope_is_not_written_and_old_catalogs_mean_it(world: World, hub: Hub) -> None:
    world.image(version="01020000", upgrade_from=["01000000"])
    world.build()
    document = json.loads((world.root / "catalog" / CATALOG_FILE).read_text())
    assert "scope" not in document["keys"][0]  # a station that predates the field loads this catalog
    catalog = world.load()
    assert catalog.key_scopes == {catalog.document.keys[0].fingerprint: DEFAULT_SCOPE}
    assert decide(hub(), catalog, NOW).code is ReasonCode.OK


def test_a_stated_scope_is_written_and_signed(world: World) -> None:
    _world_signing_mi(world, "manufacturer-image").build()
    document = json.loads((world.root / "catalog" / CATALOG_FILE).read_text())
    assert document["keys"][0]["scope"] == "manufacturer-image"


def test_an_unknown_scope_in_a_catalog_source_names_file_line_and_field(world: World) -> None:
    world.key_lines.clear()
    world.trust("maker", "121D", scope="whole-file")
    world.image(version="01020000")
    source = world.write_source()
    with pytest.raises(CatalogFormatError) as caught:
        read_source(source)
    message = str(caught.value)
    line = source.read_text().splitlines().index('scope = "whole-file"') + 1
    assert message.startswith(f"{source}: line {line}: keys[0].scope: ")
    assert "'header-image-control' or 'manufacturer-image'" in message


def test_an_unknown_scope_in_a_built_catalog_is_malformed(world: World) -> None:
    world.image(version="01020000")
    world.build()

    def bad_scope(document: dict[str, object]) -> None:
        keys = document["keys"]
        assert isinstance(keys, list)
        keys[0]["scope"] = "whole-file"

    _resign(world, bad_scope)
    with pytest.raises(CatalogFormatError, match=r"catalog.json: keys\[0\]\.scope: Input should be"):
        world.load()
