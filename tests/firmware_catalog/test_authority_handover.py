"""Rotating the catalog authority: a catalog signed by the new key carries the old key's signature over it once; a
holder that trusts the old key accepts it, trusts the new key from then on, and refuses the old key's catalogs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware_catalog.authority_handover import HANDOVER_FILE, make_handover
from firmware_catalog.catalog import CatalogHolder
from firmware_catalog.catalog_source import build_catalog
from firmware_catalog.errors import KeyFileError
from firmware_catalog.keys import fingerprint, generate_key
from firmware_catalog.reason import ReasonCode
from firmware_catalog.signer import KeySigner, Signer
from tests.firmware_catalog.conftest import NOW, World


def build(world: World, signer: Signer, serial: int, out: str, handover: bytes | None = None) -> Path:
    world.serial = serial
    build_catalog(world.write_source(), signer, world.root / out, NOW, handover=handover)
    return world.root / out


@pytest.fixture
def keys() -> tuple[KeySigner, KeySigner]:
    return KeySigner(generate_key()), KeySigner(generate_key())


def test_the_new_authority_is_taken_on_with_a_handover_and_the_old_one_refused_after(
    world: World, keys: tuple[KeySigner, KeySigner]
) -> None:
    old, new = keys
    world.image(version="01020000")
    holder = CatalogHolder(old.public_key())
    assert holder.offer(build(world, old, 1, "c1"), NOW).accepted
    bare = holder.offer(build(world, new, 2, "c2-bare"), NOW)
    assert (bare.accepted, bare.code) == (False, ReasonCode.CATALOG_SIGNATURE_INVALID)
    offer = holder.offer(build(world, new, 2, "c2", make_handover(old, new.public_key())), NOW)
    assert offer.accepted, offer.message
    assert "signed by the new catalog authority" in offer.message
    assert fingerprint(holder.authority) == fingerprint(new.public_key())
    assert [fingerprint(k) for k in holder.authority_chain] == [
        fingerprint(old.public_key()),
        fingerprint(new.public_key()),
    ]
    # The old key alone, even with a higher serial (as a thief of it would sign), is a rollback now.
    rollback = holder.offer(build(world, old, 9, "c9-old"), NOW)
    assert (rollback.accepted, rollback.code) == (False, ReasonCode.CATALOG_ROLLBACK)
    assert holder.current is not None
    assert holder.current.serial == 2
    # The handover is carried once: the new key's next catalog needs none.
    assert holder.offer(build(world, new, 3, "c3"), NOW).accepted


def test_a_handover_not_signed_by_the_authority_in_force_is_refused(
    world: World, keys: tuple[KeySigner, KeySigner]
) -> None:
    old, new = keys
    world.image(version="01020000")
    forged = json.loads(make_handover(new, generate_key().public_key()))  # any key's signature, not the old one's
    genuine = json.loads(make_handover(old, new.public_key()))
    genuine["signature"] = forged["signature"]
    folder = build(world, new, 2, "c2", json.dumps(genuine).encode())
    offer = CatalogHolder(old.public_key()).offer(folder, NOW)
    assert (offer.accepted, offer.code) == (False, ReasonCode.CATALOG_SIGNATURE_INVALID)
    assert "not signed by the catalog authority key in force" in offer.message
    # A handover from a key the holder never trusted is not for it: the catalog's signature is what fails.
    stranger = KeySigner(generate_key())
    other = build(world, new, 2, "c2-other", make_handover(stranger, new.public_key()))
    refused = CatalogHolder(old.public_key()).offer(other, NOW)
    assert (refused.code, "does not verify" in refused.message) == (ReasonCode.CATALOG_SIGNATURE_INVALID, True)


def test_a_build_refuses_a_handover_to_another_key_than_its_own(
    world: World, keys: tuple[KeySigner, KeySigner]
) -> None:
    old, new = keys
    world.image(version="01020000")
    with pytest.raises(KeyFileError, match=r"^--handover: hands over to .*, but the catalog is signed by"):
        build(world, old, 2, "c2", make_handover(old, new.public_key()))
    assert not (world.root / "c2").exists()


def test_a_holder_resumes_from_its_pinned_chain_unless_a_person_chose_another_root(
    world: World, keys: tuple[KeySigner, KeySigner]
) -> None:
    old, new = keys
    world.image(version="01020000")
    chain = (old.public_key(), new.public_key())
    resumed = CatalogHolder(old.public_key(), None, chain)
    assert fingerprint(resumed.authority) == fingerprint(new.public_key())
    assert resumed.offer(build(world, old, 5, "c5-old"), NOW).code is ReasonCode.CATALOG_ROLLBACK
    chosen = KeySigner(generate_key())
    fresh = CatalogHolder(chosen.public_key(), None, chain)
    assert [fingerprint(k) for k in fresh.authority_chain] == [fingerprint(chosen.public_key())]
    assert fresh.offer(build(world, chosen, 6, "c6"), NOW).accepted


def test_the_handover_file_is_one_a_build_writes(world: World, keys: tuple[KeySigner, KeySigner]) -> None:
    old, new = keys
    world.image(version="01020000")
    folder = build(world, new, 2, "c2", make_handover(old, new.public_key()))
    assert (folder / HANDOVER_FILE).is_file()
    build(world, new, 3, "c2")  # rebuilt over a folder holding a handover: not refused as a stranger's file
    assert not (folder / HANDOVER_FILE).exists()
