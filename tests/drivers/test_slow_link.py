"""A slow line within spec, through a real link: a simulated hub on a TCP port behind an emulated 19200-baud UART
with an FTDI adapter's 16 ms latency each way, the `tcp` driver told the line's rate (`line_baud`). The first visit
succeeds, nothing is sent twice, and a resume sends only what the hub lacks.

Before: the reply timeout ignored the 2.1 s line time of each 4 KiB DATA frame queued ahead of VERIFY, and the first
retransmission timer was shorter than one frame's line time, so the station resent frames the hub already had and
gave up on VERIFY ("no answer to VERIFY after 5 tries 1.00 s apart"); a resume resent 43 of 60 frames.
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from drivers.transfer import DATA_HEADER_SIZE
from drivers.url_jig import UrlJig
from firmware_catalog.hub import HubIdentity
from firmware_catalog.image import UpgradeImage, build_signed_image, parse_image
from firmware_catalog.keys import generate_key
from simulators.hub import HubOptions, stage_bytes
from simulators.hub_server import HubServer
from simulators.link import LinkSettings
from simulators.tcp_server import TcpJigServer
from station.outcome import Outcome
from tests.flashing import flash_once

BAUD = 19_200
LATENCY_S = 0.016


@pytest.fixture(scope="module")
def signed() -> tuple[UpgradeImage, ec.EllipticCurvePublicKey]:
    key = generate_key()
    raw = build_signed_image(
        key, manufacturer=0x1072, image_type=0x0102, file_version=0x04010002, min_hardware_version=0x0100,
        max_hardware_version=0x0200, manufacturer_image=os.urandom(16 * 1024),
    )  # fmt: skip
    return parse_image(raw), key.public_key()


async def serve(state: Path, public: ec.EllipticCurvePublicKey) -> TcpJigServer:
    identity = HubIdentity(manufacturer="1072", model="0102", hardware_version="0110", firmware_version="04000007")
    options = HubOptions(identity, state, {0x1072: [public]}, reboot_delay_s=0.01)
    link = LinkSettings(baud=BAUD, latency_to_hub_s=LATENCY_S, latency_to_station_s=LATENCY_S)
    return await HubServer(options, link).serve_tcp()


@pytest.fixture
async def hub(
    tmp_path: Path, signed: tuple[UpgradeImage, ec.EllipticCurvePublicKey]
) -> AsyncIterator[tuple[TcpJigServer, Path]]:
    listening = await serve(tmp_path / "hub", signed[1])
    try:
        yield listening, tmp_path / "hub"
    finally:
        await listening.close()


def driver(url: str) -> UrlJig:
    return UrlJig.from_config({"url": url, "line_baud": BAUD})


async def test_a_16_kib_image_at_19200_baud_succeeds_first_time_without_resending(
    hub: tuple[TcpJigServer, Path], signed: tuple[UpgradeImage, ec.EllipticCurvePublicKey]
) -> None:
    listening, _ = hub
    image, _ = signed
    jig = driver(listening.url)
    try:
        ending, observer = await flash_once(jig, image, link_retries=0)
    finally:
        await jig.close()
    (attempt,) = observer.of("transfer_ended")
    assert (ending.outcome, ending.firmware_after) == (Outcome.REFLASHED, "04010002")
    assert (attempt["retransmitted_frames"], attempt["timeouts"], attempt["stalls"]) == (0, 0, 0)
    assert attempt["frames"] == math.ceil(image.total_size / (4096 - DATA_HEADER_SIZE))


async def test_a_resume_at_19200_baud_sends_only_what_the_hub_lacks(
    hub: tuple[TcpJigServer, Path], signed: tuple[UpgradeImage, ec.EllipticCurvePublicKey]
) -> None:
    listening, state = hub
    image, _ = signed
    await listening.close()  # stage the half the hub holds while nothing serves it, then serve it again
    half = image.total_size // 2
    stage_bytes(state, image.raw[:half], total_size=image.total_size, sha256=image.manufacturer_image_sha256,
                image_sha256=image.upgrade_image_sha256)  # fmt: skip
    again = await serve(state, signed[1])
    jig = driver(again.url)
    try:
        ending, observer = await flash_once(jig, image, link_retries=0)
    finally:
        await jig.close()
        await again.close()
    assert ending.outcome == Outcome.REFLASHED
    (attempt,) = observer.of("transfer_ended")
    assert (attempt["resumed_from"], attempt["resume_proven"], attempt["erased"]) == (half, True, False)
    assert (attempt["retransmitted_frames"], attempt["timeouts"]) == (0, 0)
    assert attempt["image_bytes_sent"] == image.total_size - half
    assert attempt["frames"] == math.ceil((image.total_size - half) / (4096 - DATA_HEADER_SIZE))
