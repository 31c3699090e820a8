"""The protocol's rules between a real session and a simulated hub: hashes, CS06 codes, negotiation, baud switch,
erase, noise on the line, the registry."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from drivers.driver_registry import driver_class
from drivers.errors import ProtocolError
from drivers.frame import ActivationCode, Frame, HubState, MessageType
from drivers.jig_driver import ImageEncoding
from drivers.maintenance_port import MaintenancePort
from firmware_catalog.image import UpgradeImage, build_signed_image, parse_image
from firmware_catalog.keys import generate_key
from firmware_catalog.signature_scope import SignatureScope
from simulators.jig import SimJig
from simulators.link import LinkSettings
from station.outcome import JobReason, Outcome
from tests.flashing import flash_once
from tests.simulators.conftest import FAST_LINK, MANUFACTURER, MODEL, QUICK, make_image

Jigs = Callable[..., SimJig]


async def test_activate_codes_for_no_image_and_wrong_hash(make_jig: Jigs, image: UpgradeImage) -> None:
    jig = make_jig()
    mi_sha, image_sha = image.manufacturer_image_sha256, image.upgrade_image_sha256
    assert (await jig.activate(mi_sha, image_sha)).code == ActivationCode.NO_IMAGE_HELD
    await jig.transfer(image)
    assert (await jig.activate("00" * 32, image_sha)).code == ActivationCode.HASH_MISMATCH
    assert (await jig.activate(mi_sha, "00" * 32)).code == ActivationCode.HASH_MISMATCH
    activation = await jig.activate(mi_sha, image_sha)
    assert activation.code == ActivationCode.SUCCESS
    assert activation.running_version == f"{image.file_version:08X}"


async def test_untrusted_signature_is_caught_by_the_hub(make_jig: Jigs) -> None:
    jig = make_jig()
    stranger = make_image(generate_key(), os.urandom(5000))
    ending, observer = await flash_once(jig, stranger)
    assert (ending.outcome, ending.reason) == (Outcome.FAILED, JobReason.HUB_SIGNATURE_REJECTED)
    assert "signature" in ending.detail
    assert observer.of("activate") == []  # never activated
    assert (await jig.verify()).signature_ok is False
    activation = await jig.activate(stranger.manufacturer_image_sha256, stranger.upgrade_image_sha256)
    assert activation.code == ActivationCode.ACTIVATION_FAILURE
    assert activation.running_version == "04000007"


async def test_hardware_out_of_range_fails_activation(make_jig: Jigs, key: ec.EllipticCurvePrivateKey) -> None:
    jig = make_jig()
    image = parse_image(
        build_signed_image(
            key,
            manufacturer=MANUFACTURER,
            image_type=MODEL,
            file_version=0x05000000,
            min_hardware_version=0x0300,
            max_hardware_version=0x0400,
            manufacturer_image=os.urandom(3000),
        )
    )
    await jig.transfer(image)
    assert (await jig.verify()).signature_ok
    activation = await jig.activate(image.manufacturer_image_sha256, image.upgrade_image_sha256)
    assert activation.code == ActivationCode.ACTIVATION_FAILURE


async def test_erase_forgets_a_partial_transfer(make_jig: Jigs, random_image: UpgradeImage) -> None:
    jig = make_jig("disconnect@100000")
    with pytest.raises(Exception, match="closed"):
        await jig.transfer(random_image)
    port = await jig.session()
    status = await port.keepalive()
    assert status.held >= 100000
    assert status.state == HubState.IDLE
    await port.erase()
    assert (await port.keepalive()).held == 0
    stats = await jig.transfer(random_image)
    assert stats.resumed_from == 0


async def test_payload_and_window_are_negotiated(make_jig: Jigs, image: UpgradeImage) -> None:
    jig = make_jig(settings=dataclasses.replace(QUICK, max_payload=16384, window=32), max_payload=6000, window=4)
    await jig.identify()
    assert jig.port is not None
    assert (jig.port.payload_size, jig.port.window) == (6000, 4)
    assert (await flash_once(jig, image))[0].outcome == Outcome.REFLASHED


async def test_stop_and_wait_still_works(make_jig: Jigs, image: UpgradeImage) -> None:
    jig = make_jig(settings=dataclasses.replace(QUICK, window=1))
    ending, observer = await flash_once(jig, image)
    assert ending.outcome == Outcome.REFLASHED
    assert observer.of("transfer_ended")[0]["retransmitted_frames"] == 0


async def test_compression_is_skipped_when_it_does_not_shrink(make_jig: Jigs, key: ec.EllipticCurvePrivateKey) -> None:
    jig = make_jig()
    image = make_image(key, os.urandom(40_000))
    stats = await jig.transfer(image)
    assert stats.compression == ImageEncoding.NONE
    assert stats.image_bytes_sent == image.total_size


async def test_noisy_line_still_flashes(make_jig: Jigs, image: UpgradeImage) -> None:
    noisy = dataclasses.replace(FAST_LINK, error_rate=3e-5, drop_rate=3e-5, seed=3)
    jig = make_jig(link=noisy)
    ending, _ = await flash_once(jig, image)
    assert (ending.outcome, ending.firmware_after) == (Outcome.REFLASHED, f"{image.file_version:08X}")


async def test_baud_switch_moves_both_ends(make_jig: Jigs, image: UpgradeImage) -> None:
    jig = make_jig(link=dataclasses.replace(FAST_LINK, baud=115_200), baud_rates=(115_200, 921_600))
    port = await jig.session()
    assert await port.switch_baud(921_600) == 921_600
    assert jig.links[-1].hub_end.baud == 921_600
    assert await port.switch_baud(3_000_000) == 921_600  # the hub does not offer it
    assert (await flash_once(jig, image))[0].outcome == Outcome.REFLASHED


async def test_baud_switch_falls_back_when_the_line_cannot_carry_it(make_jig: Jigs, image: UpgradeImage) -> None:
    jig = make_jig(link=dataclasses.replace(FAST_LINK, baud=921_600, max_baud=1_000_000))
    port = await jig.session()
    assert await port.switch_baud(3_000_000) == 921_600
    assert jig.links[-1].hub_end.baud == 921_600
    assert jig.links[-1].station_end.baud == 921_600
    assert (await flash_once(jig, image))[0].outcome == Outcome.REFLASHED


async def test_malformed_request_gets_an_error_naming_the_field(make_jig: Jigs) -> None:
    jig = make_jig()
    port: MaintenancePort = await jig.session()
    bad = Frame(MessageType.BEGIN_TRANSFER, 999, 0, b"\x01\x02")
    port.transport.writer.write(bad.encode())
    reply = await port.request(MessageType.KEEPALIVE, MessageType.ALIVE)
    assert reply.state == HubState.IDLE
    with pytest.raises(ProtocolError, match="error 2: BEGIN_TRANSFER: total_size at byte 14"):
        await port.exchange(Frame(MessageType.BEGIN_TRANSFER, 1000, 0, b"\x01\x02"), {MessageType.ACCEPT})
    with pytest.raises(ValueError, match="cannot build BEGIN_TRANSFER"):
        await port.request(
            MessageType.BEGIN_TRANSFER,
            MessageType.ACCEPT,
            total_size=1,
            sha256=b"",
            image_sha256=bytes(32),
            compression=0,
        )


def test_registry_names_the_sim_driver() -> None:
    assert driver_class("sim") is SimJig
    with pytest.raises(KeyError, match="unknown jig driver 'ftp'; known: serial, sim, tcp, usb"):
        driver_class("ftp")


async def test_slow_flash_and_slow_link(make_jig: Jigs, key: ec.EllipticCurvePrivateKey) -> None:
    image = make_image(key, os.urandom(20_000))
    jig = make_jig(link=LinkSettings(baud=115_200, latency_to_station_s=0.016), flash_bytes_per_s=50_000)
    ending, observer = await flash_once(jig, image)
    assert ending.outcome == Outcome.REFLASHED
    assert observer.of("transfer_ended")[0]["timeouts"] == 0


async def test_a_hub_offering_a_uselessly_small_payload_is_refused(make_jig: Jigs) -> None:
    jig = make_jig(max_payload=20)
    with pytest.raises(ProtocolError, match="payload of 20 bytes"):
        await jig.identify()


async def test_the_hub_checks_signatures_over_its_manufacturers_scope(
    make_jig: Jigs, key: ec.EllipticCurvePrivateKey
) -> None:
    """A hub follows its manufacturer: one built for the Manufacturer Image scope accepts an image signed so, and a
    hub of the default scope refuses the same image (signature_ok 0, activation refused)."""
    image = make_image(key, os.urandom(3000), 0x05000000, SignatureScope.MANUFACTURER_IMAGE)
    follows = make_jig(signature_scope=SignatureScope.MANUFACTURER_IMAGE)
    await follows.transfer(image)
    assert (await follows.verify()).signature_ok
    activation = await follows.activate(image.manufacturer_image_sha256, image.upgrade_image_sha256)
    assert activation.code == ActivationCode.SUCCESS
    await follows.close()
    default = make_jig()
    await default.transfer(image)
    assert (await default.verify()).signature_ok is False
    activation = await default.activate(image.manufacturer_image_sha256, image.upgrade_image_sha256)
    assert activation.code == ActivationCode.ACTIVATION_FAILURE
