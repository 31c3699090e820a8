"""Proof of possession against hubs that lie: what the station side (MaintenancePort, station/flash.py) gets from
each.

Every hub here holds, or claims to hold, something; the station believes only what the hub proves with a MAC keyed
by a fresh nonce over the bytes it holds (docs/maintenance-port.md, "Proof of possession").
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.errors import HubSwapped, ProofFailed
from drivers.frame import ProofRegion
from drivers.jig_driver import ImageRegion
from drivers.maintenance_port import MaintenancePort
from firmware_catalog.hub import HubIdentity
from firmware_catalog.image import UpgradeImage, build_signed_image, parse_image
from firmware_catalog.keys import generate_key
from simulators.hub import HubOptions, SimulatedHub, stage_bytes
from simulators.jig import SimJig
from simulators.link import Link, LinkSettings
from station.outcome import JobReason, Outcome
from tests.flashing import flash_once, staged_proofs
from tests.simulators.conftest import FAST_LINK, MANUFACTURER, MODEL, OLD_VERSION, QUICK, TARGET_VERSION

Jigs = Callable[..., SimJig]


def _target(image: UpgradeImage) -> str:
    return f"{image.file_version:08X}"


def _envelope(key: ec.EllipticCurvePrivateKey, image: UpgradeImage, header_string: str) -> UpgradeImage:
    """Another Upgrade Image around the same Manufacturer Image: same size and MI hash, another whole-file hash."""
    other = parse_image(
        build_signed_image(
            key,
            manufacturer=MANUFACTURER,
            image_type=MODEL,
            file_version=TARGET_VERSION,
            min_hardware_version=0x0100,
            max_hardware_version=0x0200,
            manufacturer_image=image.manufacturer_image,
            header_string=header_string,
        )
    )
    assert other.total_size == image.total_size
    assert other.manufacturer_image_sha256 == image.manufacturer_image_sha256
    assert other.upgrade_image_sha256 != image.upgrade_image_sha256
    return other


@pytest.fixture
def revoked(image: UpgradeImage) -> UpgradeImage:
    """The same Manufacturer Image and header, signed by a key that is not the catalog's (say, a revoked one)."""
    return _envelope(generate_key(), image, "sim test image")


def _stage(state_dir: Path, raw: bytes, image: UpgradeImage, keyed_as: UpgradeImage | None = None) -> None:
    keyed_as = keyed_as or image
    stage_bytes(
        state_dir,
        raw,
        total_size=image.total_size,
        sha256=keyed_as.manufacturer_image_sha256,
        image_sha256=keyed_as.upgrade_image_sha256,
    )


def _state(jig: SimJig) -> dict[str, object]:
    state: dict[str, object] = json.loads((jig.hub_options.state_dir / "state.json").read_text())
    return state


def _running_slot(jig: SimJig) -> bytes:
    state = _state(jig)
    return (jig.hub_options.state_dir / f"slot-{state['active_slot']}.bin").read_bytes()


async def test_an_honest_resume_is_proven_and_sends_only_the_rest(
    make_jig: Jigs, tmp_path: Path, random_image: UpgradeImage
) -> None:
    held = 200_000
    _stage(tmp_path / "hub", random_image.raw[:held], random_image)
    jig = make_jig()
    stats = await jig.transfer(random_image)
    assert (stats.resumed_from, stats.resume_proven, stats.erased) == (held, True, False)
    assert stats.image_bytes_sent == random_image.total_size - held
    assert jig.bytes_to_hub < random_image.total_size - held + 10_000
    ending, observer = await flash_once(jig, random_image)
    assert (ending.outcome, ending.reason) == (Outcome.REFLASHED, JobReason.REFLASHED)
    (ended,) = observer.of("transfer_ended")
    assert ended["resumed_from"] == random_image.total_size  # the whole image, proven
    assert ended["resume_proven"] is True
    assert staged_proofs(observer) == [True]
    assert [p["ok"] for p in observer.of("proof") if p["region"] == "running"] == [True]
    assert _running_slot(jig) == random_image.raw


async def test_a_fresh_transfer_has_nothing_to_prove(make_jig: Jigs, image: UpgradeImage) -> None:
    stats = await make_jig().transfer(image)
    assert (stats.resumed_from, stats.resume_proven, stats.erased) == (0, None, False)


async def test_a_disconnected_transfer_resumes_from_a_proven_prefix(make_jig: Jigs, random_image: UpgradeImage) -> None:
    jig = make_jig("disconnect@150000")
    ending, observer = await flash_once(jig, random_image)
    assert ending.outcome == Outcome.REFLASHED
    (resumed,) = observer.of("transfer_ended")
    assert resumed["resumed_from"] >= 150_000
    assert resumed["resume_proven"] is True
    assert not resumed["erased"]
    assert observer.of("erased") == []
    assert jig.bytes_to_hub < 1.1 * random_image.total_size


async def test_claim_full_resume_and_echo_hash_never_pass(make_jig: Jigs, image: UpgradeImage) -> None:
    jig = make_jig("claim-full-resume,echo-hash")
    port = await jig.session()
    with pytest.raises(ProofFailed, match="still claims") as caught:
        await port.transfer(image)
    assert caught.value.region == ProofRegion.STAGED
    assert caught.value.held == image.total_size
    ending, observer = await flash_once(jig, image)
    assert (ending.outcome, ending.reason) == (Outcome.QUARANTINED, JobReason.HUB_PROOF_FAILED)
    assert "still claims" in ending.detail
    assert observer.of("activate") == []
    version = await jig.read_version()
    assert version.running_version == OLD_VERSION  # never activated


async def test_no_store_with_echo_hash_fails_the_staged_proof(make_jig: Jigs, image: UpgradeImage) -> None:
    jig = make_jig("no-store,echo-hash")
    await jig.transfer(image)
    verification = await jig.verify()  # the lie, word for word
    assert (verification.held, verification.sha256, verification.signature_ok) == (
        image.total_size,
        image.manufacturer_image_sha256,
        True,
    )
    proof = await jig.prove(image, ImageRegion.STAGED)
    assert proof.held == image.total_size
    assert not proof.ok
    ending, observer = await flash_once(jig, image)
    assert (ending.outcome, ending.reason) == (Outcome.QUARANTINED, JobReason.HUB_PROOF_FAILED)
    assert f"could not prove it holds the {image.total_size}-byte image after an erase" in ending.detail
    assert staged_proofs(observer) == [False, False]  # the staged region, before and after the erase
    assert len(observer.of("erased")) == 1
    assert observer.of("activate") == []
    assert (await jig.read_version()).running_version == OLD_VERSION


async def test_echo_hash_alone_is_caught_by_the_running_proof(make_jig: Jigs, image: UpgradeImage) -> None:
    # The hub stores honestly, then claims it runs the target after ACTIVATE without booting it: every word it says
    # matches (hash, CS06 Success, version read back), and it was recorded REFLASHED before protocol 2.
    jig = make_jig("echo-hash")
    ending, observer = await flash_once(jig, image)
    assert (ending.outcome, ending.reason) == (Outcome.QUARANTINED, JobReason.RUNNING_IMAGE_UNPROVEN)
    assert f"reports {_target(image)} but could not prove it runs image" in ending.detail
    assert ending.firmware_after is None  # what it runs is unknown
    assert [p["ok"] for p in observer.of("proof") if p["region"] == "running"] == [False]
    assert (await jig.read_version()).running_version == _target(image)  # the lie
    assert _state(jig)["running_image_sha256"] is None  # nothing new boots


async def test_an_honest_hub_forgets_another_envelope_of_the_same_image(
    make_jig: Jigs, tmp_path: Path, image: UpgradeImage, revoked: UpgradeImage
) -> None:
    _stage(tmp_path / "hub", revoked.raw, image, keyed_as=revoked)
    jig = make_jig()
    stats = await jig.transfer(image)
    assert (stats.resumed_from, stats.resume_proven, stats.erased) == (0, None, False)


async def test_a_stale_envelope_resumed_by_mi_is_erased_and_the_right_one_runs(
    make_jig: Jigs, tmp_path: Path, image: UpgradeImage, revoked: UpgradeImage
) -> None:
    _stage(tmp_path / "hub", revoked.raw, image, keyed_as=revoked)
    jig = make_jig("resume-by-mi")
    ending, observer = await flash_once(jig, image)
    first = observer.of("transfer_ended")[0]
    assert (first["resumed_from"], first["resume_proven"], first["erased"]) == (0, False, True)
    assert first["image_bytes_sent"] >= image.total_size  # the catalog's envelope, from byte 0
    assert [p["ok"] for p in observer.of("proof") if p["region"] == "running"] == [True]
    assert (ending.outcome, ending.firmware_after) == (Outcome.REFLASHED, _target(image))
    assert _state(jig)["running_image_sha256"] == image.upgrade_image_sha256
    assert _running_slot(jig) == image.raw


async def test_a_stale_envelope_that_survives_erase_ends_in_proof_failed(
    make_jig: Jigs, tmp_path: Path, image: UpgradeImage, revoked: UpgradeImage
) -> None:
    _stage(tmp_path / "hub", revoked.raw, image, keyed_as=revoked)
    jig = make_jig("resume-by-mi,ignore-erase")
    ending, _ = await flash_once(jig, image)
    assert (ending.outcome, ending.reason) == (Outcome.QUARANTINED, JobReason.HUB_PROOF_FAILED)
    assert "after an erase still claims" in ending.detail
    version = await jig.read_version()
    assert version.running_version == OLD_VERSION


async def test_a_spliced_prefix_is_erased_and_sent_from_zero(
    make_jig: Jigs, tmp_path: Path, key: ec.EllipticCurvePrivateKey, image: UpgradeImage
) -> None:
    # Stopped under one catalog (another header string), resumed under another with a same-size image: the head the
    # hub holds is not this image's head, even though the hub files it under this image's hashes.
    other = _envelope(key, image, "another catalog's image")
    assert other.raw[:60_000] != image.raw[:60_000]
    _stage(tmp_path / "hub", other.raw[:60_000], image)
    jig = make_jig()
    port = await jig.session()
    stats = await port.transfer(image)
    assert (stats.resumed_from, stats.resume_proven, stats.erased) == (0, False, True)
    assert stats.image_bytes_sent >= image.total_size
    ending, observer = await flash_once(jig, image)
    assert ending.outcome == Outcome.REFLASHED
    assert [p["ok"] for p in observer.of("proof") if p["region"] == "running"] == [True]
    assert _running_slot(jig) == image.raw


async def test_a_spliced_prefix_resumed_by_mi_is_erased(
    make_jig: Jigs, tmp_path: Path, key: ec.EllipticCurvePrivateKey, image: UpgradeImage
) -> None:
    other = _envelope(key, image, "another catalog's image")
    _stage(tmp_path / "hub", other.raw[:60_000], image, keyed_as=other)
    jig = make_jig("resume-by-mi")
    ending, observer = await flash_once(jig, image)
    assert ending.outcome == Outcome.REFLASHED
    first = observer.of("transfer_ended")[0]
    assert (first["resume_proven"], first["erased"]) == (False, True)
    assert _running_slot(jig) == image.raw


async def test_activate_then_drop_still_ends_running_and_proven(make_jig: Jigs, image: UpgradeImage) -> None:
    jig = make_jig("activate-then-drop")
    ending, observer = await flash_once(jig, image)
    (activate,) = observer.of("activate")
    assert activate["code"] is None  # the answer never came
    assert (ending.outcome, ending.reason, ending.firmware_after) == (
        Outcome.REFLASHED,
        JobReason.REFLASHED,
        _target(image),
    )
    assert [p["ok"] for p in observer.of("proof") if p["region"] == "running"] == [True]
    assert len(jig.links) >= 2


async def test_a_hub_swapped_mid_transfer_is_refused_after_its_identify(
    hub_options: Callable[..., HubOptions], tmp_path: Path, identity: HubIdentity, random_image: UpgradeImage
) -> None:
    other = identity.model_copy(update={"chf_id": "00-DB-12-34-56-78-90-B0", "serial": "SIM0002"})
    second = hub_options(identity=other, state_dir=tmp_path / "second")
    jig = SimJig(hub_options("swap@100000"), FAST_LINK, QUICK, swap_to=second)
    try:
        with pytest.raises(HubSwapped) as caught:
            await flash_once(jig, random_image)
        assert caught.value.expected.chf_id == identity.chf_id
        assert caught.value.found.chf_id == other.chf_id
        assert caught.value.fields == ("chf_id", "serial")
        assert "00-DB-12-34-56-78-90-A0" in str(caught.value)
        assert "00-DB-12-34-56-78-90-B0" in str(caught.value)
        assert len(jig.swapped_out) == 1
        assert jig.hub.frames_received == 1  # its IDENTIFY, and nothing after it
        assert jig.hub.held == 0
        assert jig.port is None  # the session with the stranger is closed
    finally:
        await jig.close()


async def test_an_explicit_identify_checks_the_expected_hub(make_jig: Jigs, identity: HubIdentity) -> None:
    jig = make_jig()
    assert await jig.identify() == (await jig.identify())
    jig.expect(identity.model_copy(update={"gpf_id": "00-DB-12-34-56-78-90-FF", "firmware_version": "01000000"}))
    with pytest.raises(HubSwapped, match=r"gpf_id 00-DB-12-34-56-78-90-FF -> 00-DB-12-34-56-78-90-A1\)"):
        await jig.identify()
    assert jig.port is None
    jig.expect(identity.model_copy(update={"firmware_version": "01000000", "serial": None}))
    assert (await jig.identify()).chf_id == identity.chf_id  # versions change; a missing serial is no difference


# The property: whatever a hub holds other than the image's prefix, its PROOF never verifies.

_IMAGE = os.urandom(4096)


@st.composite
def _not_the_prefix(draw: st.DrawFn) -> bytes:
    length = draw(st.integers(1, len(_IMAGE)))
    if draw(st.booleans()):
        at = draw(st.integers(0, length - 1))
        flip = draw(st.integers(1, 255))
        flipped = bytearray(_IMAGE[:length])
        flipped[at] ^= flip
        return bytes(flipped)
    data = draw(st.binary(min_size=1, max_size=len(_IMAGE)))
    if data == _IMAGE[: len(data)]:
        data = bytes([data[0] ^ 1]) + data[1:]
    return data


async def _prove_held(held: bytes, hub_options: HubOptions) -> bool:
    with tempfile.TemporaryDirectory() as state:
        stage_bytes(state, held, total_size=len(_IMAGE), sha256="00" * 32, image_sha256="11" * 32)
        hub = SimulatedHub(dataclasses.replace(hub_options, state_dir=Path(state)))
        link = Link(LinkSettings(baud=50_000_000))
        serving = asyncio.create_task(hub.serve(link.hub, link.hub_end))
        port = MaintenancePort(link.station, QUICK)
        try:
            await port.identify()
            proof = await port.prove(_IMAGE, ProofRegion.STAGED, 0, len(held))
        finally:
            await port.close()
            link.cut()
            await serving
        assert proof.held == len(held)
        return proof.ok


def test_the_true_prefix_proves(hub_options: Callable[..., HubOptions]) -> None:
    assert asyncio.run(_prove_held(_IMAGE[:1000], hub_options()))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(held=_not_the_prefix())
def test_a_proof_over_anything_but_the_prefix_never_verifies(
    held: bytes, hub_options: Callable[..., HubOptions]
) -> None:
    assert held != _IMAGE[: len(held)]
    assert not asyncio.run(_prove_held(held, hub_options()))


async def test_a_proof_asks_for_more_than_the_hub_holds(make_jig: Jigs, tmp_path: Path, image: UpgradeImage) -> None:
    _stage(tmp_path / "hub", image.raw[:1000], image)
    jig = make_jig()
    port = await jig.session()
    short = await port.prove(image.raw, ProofRegion.STAGED, 0, 2000)
    assert (short.held, short.ok) == (1000, False)
    assert (await port.prove(image.raw, ProofRegion.STAGED, 500, 500)).ok
    assert not (await port.prove(image.raw, ProofRegion.RUNNING, 0, 1)).ok  # nothing activated yet: empty
    with pytest.raises(ValueError, match="proof over bytes"):
        await port.prove(image.raw, ProofRegion.STAGED, 0, image.total_size + 1)


def test_the_prove_timeout_allows_a_second_per_mib() -> None:
    settings = dataclasses.replace(QUICK, reply_timeout_s=0.5)
    assert settings.prove_timeout_s(0) == 0.5
    assert settings.prove_timeout_s(3 * 1024 * 1024) == pytest.approx(3.5)


async def test_swap_to_from_config(tmp_path: Path) -> None:
    jig = SimJig.from_config(
        {
            "state_dir": tmp_path / "first",
            "chf_id": "00-DB-12-34-56-78-90-A0",
            "fault": "swap@5000",
            "reboot_delay_s": 0,
            "trusted_keys": {},
            "swap_to": {"state_dir": tmp_path / "second", "chf_id": "00-DB-12-34-56-78-90-B0"},
        }
    )
    try:
        assert jig.hub_options.faults.swap == 5000
        assert jig.swap_to is not None
        assert jig.swap_to.identity.chf_id == "00-DB-12-34-56-78-90-B0"
        assert jig.swap_to.state_dir == tmp_path / "second"
        assert jig.swap_to.reboot_delay_s == 0
        jig.hub.swapped = True  # as the fault does when it fires
        assert (await jig.identify()).chf_id == "00-DB-12-34-56-78-90-B0"
        assert [hub.identity.chf_id for hub in jig.swapped_out] == ["00-DB-12-34-56-78-90-A0"]
    finally:
        await jig.close()
