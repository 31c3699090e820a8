"""Whole flashes through the sim driver: identify, transfer, verify, activate, read back."""

from __future__ import annotations

from collections.abc import Callable

from drivers.jig_driver import ImageEncoding
from firmware_catalog.image import UpgradeImage
from simulators.jig import SimJig
from station.outcome import JobReason, Outcome
from tests.flashing import flash_once
from tests.simulators.conftest import OLD_VERSION


async def test_full_flash_runs_the_target(make_jig: Callable[..., SimJig], image: UpgradeImage) -> None:
    jig = make_jig()
    before = await jig.identify()
    assert before.firmware_version == OLD_VERSION
    assert before.chf_id == "00-DB-12-34-56-78-90-A0"
    seen: list[int] = []
    ending, observer = await flash_once(jig, image, progress=lambda done, total: seen.append(done))
    assert (ending.outcome, ending.reason) == (Outcome.REFLASHED, JobReason.REFLASHED)
    assert ending.firmware_after == f"{image.file_version:08X}"
    assert ending.hub_sha256 == image.manufacturer_image_sha256
    assert observer.of("transfer_ended")[0]["compression"] == ImageEncoding.DEFLATE.name
    assert seen[-1] == image.total_size
    assert (await jig.identify()).firmware_version == f"{image.file_version:08X}"
