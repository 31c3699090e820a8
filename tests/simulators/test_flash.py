"""Whole flashes through the sim driver: identify, transfer, verify, activate, read back."""

from __future__ import annotations

from collections.abc import Callable

from drivers.jig import flash
from drivers.jig_driver import ImageEncoding
from firmware_catalog.image import UpgradeImage
from simulators.jig import SimJig
from tests.simulators.conftest import OLD_VERSION


async def test_full_flash_runs_the_target(make_jig: Callable[..., SimJig], image: UpgradeImage) -> None:
    jig = make_jig()
    before = await jig.identify()
    assert before.firmware_version == OLD_VERSION
    assert before.chf_id == "00-DB-12-34-56-78-90-A0"
    seen: list[int] = []
    result = await flash(jig, image, progress=lambda done, total: seen.append(done))
    assert result.version.running_version == f"{image.file_version:08X}"
    assert result.verification.sha256 == image.manufacturer_image_sha256
    assert result.attempts[0].compression == ImageEncoding.DEFLATE
    assert seen[-1] == image.total_size
    assert (await jig.identify()).firmware_version == f"{image.file_version:08X}"
