"""Every fault a hub can have, and the outcome the station must get: resumed and done, or a clear failure that
leaves the hub recoverable (shown by recovering it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from drivers.errors import ActivationFailed, LinkTimeout, TransferRefused
from drivers.frame import ActivationCode, RefuseReason
from drivers.jig import flash
from firmware_catalog.image import UpgradeImage
from simulators.fault import Faults
from simulators.jig import SimJig
from tests.simulators.conftest import OLD_VERSION, QUICK

Jigs = Callable[..., SimJig]


def _target(image: UpgradeImage) -> str:
    return f"{image.file_version:08X}"


async def test_power_loss_resumes_from_what_the_flash_kept(make_jig: Jigs, random_image: UpgradeImage) -> None:
    jig = make_jig("power-loss@65536")
    first_hub = jig.hub
    result = await flash(jig, random_image)
    assert not first_hub.powered
    assert jig.hub is not first_hub  # powered up again from its state directory
    assert [a.resumed_from for a in result.attempts] == [65536]
    assert result.version.running_version == _target(random_image)
    assert jig.bytes_to_hub < 1.1 * random_image.total_size


async def test_disconnect_resumes_without_resending_acknowledged_data(
    make_jig: Jigs, random_image: UpgradeImage
) -> None:
    jig = make_jig("disconnect@200000")
    result = await flash(jig, random_image)
    (resumed,) = result.attempts
    assert resumed.resumed_from >= 200000
    assert result.version.running_version == _target(random_image)
    assert len(jig.links) == 2
    assert jig.bytes_to_hub < 1.1 * random_image.total_size


async def test_corrupt_frames_from_the_hub_are_survived(make_jig: Jigs, image: UpgradeImage) -> None:
    jig = make_jig("corrupt-every=3")
    result = await flash(jig, image)
    assert result.version.running_version == _target(image)
    assert jig.hub.frames_sent >= 3


async def test_silent_hub_is_a_clear_link_timeout_and_recovers(make_jig: Jigs, image: UpgradeImage) -> None:
    jig = make_jig("silent-after=20000", settings=dataclasses.replace(QUICK, max_stalls=2))
    with pytest.raises(LinkTimeout):
        await flash(jig, image, link_retries=1)
    held = jig.hub.held
    assert held >= 20000
    await jig.power_cycle(Faults())
    result = await flash(jig, image)
    assert result.attempts[0].resumed_from == held
    assert result.version.running_version == _target(image)


async def test_activation_failure_keeps_the_old_image_and_the_staged_one(make_jig: Jigs, image: UpgradeImage) -> None:
    jig = make_jig("activation-fail")
    with pytest.raises(ActivationFailed) as caught:
        await flash(jig, image)
    assert caught.value.code == ActivationCode.ACTIVATION_FAILURE
    assert f"{caught.value.running:08X}" == OLD_VERSION
    assert (await jig.read_version()).staged_version == _target(image)
    await jig.power_cycle(Faults())
    result = await flash(jig, image)
    assert result.attempts[0].resumed_from == image.total_size  # nothing sent again
    assert result.version.running_version == _target(image)


async def test_old_version_after_reboot_is_not_success(make_jig: Jigs, image: UpgradeImage) -> None:
    jig = make_jig("old-version-after-reboot")
    with pytest.raises(ActivationFailed, match="reported Success but runs 04000007"):
        await flash(jig, image)
    await jig.power_cycle(Faults())
    result = await flash(jig, image)
    assert result.version.running_version == _target(image)


async def test_refused_image_is_a_refusal_with_its_reason(make_jig: Jigs, image: UpgradeImage) -> None:
    jig = make_jig("refuse-image")
    with pytest.raises(TransferRefused) as caught:
        await flash(jig, image)
    assert caught.value.reason == RefuseReason.REFUSED_BY_HUB
    assert jig.bytes_to_hub < 1000
    after = await jig.identify()
    assert after.firmware_version == OLD_VERSION
    assert after.staged_version is None


async def test_stuck_hub_times_out_and_boots_the_old_image_after_power_cycle(
    make_jig: Jigs, image: UpgradeImage
) -> None:
    jig = make_jig("stuck")
    with pytest.raises(LinkTimeout, match="ACTIVATE"):
        await flash(jig, image)
    await jig.power_cycle(Faults())
    identity = await jig.identify()
    assert identity.firmware_version == OLD_VERSION
    assert identity.staged_version == _target(image)
    result = await flash(jig, image)
    assert result.attempts[0].resumed_from == image.total_size
    assert result.version.running_version == _target(image)
