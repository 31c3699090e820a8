"""Every fault a hub can have, and the outcome the station must get: resumed and done, or a clear failure that
leaves the hub recoverable (shown by recovering it)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from drivers.frame import ActivationCode, RefuseReason
from firmware_catalog.image import UpgradeImage
from simulators.fault import Faults
from simulators.jig import SimJig
from station.outcome import JobReason, Outcome
from tests.flashing import flash_once
from tests.simulators.conftest import OLD_VERSION, QUICK

Jigs = Callable[..., SimJig]
# What a LinkTimeout says (drivers/maintenance_port.py, drivers/transfer.py): no answer to a request, or no progress.
LINK_TIMEOUT = re.compile(r"no answer to [A-Z_]+ after|no progress past byte")


def _target(image: UpgradeImage) -> str:
    return f"{image.file_version:08X}"


async def test_power_loss_resumes_from_what_the_flash_kept(make_jig: Jigs, random_image: UpgradeImage) -> None:
    jig = make_jig("power-loss@65536")
    first_hub = jig.hub
    ending, observer = await flash_once(jig, random_image)
    assert not first_hub.powered
    assert jig.hub is not first_hub  # powered up again from its state directory
    assert [a["resumed_from"] for a in observer.of("transfer_ended")] == [65536]
    assert (ending.outcome, ending.firmware_after) == (Outcome.REFLASHED, _target(random_image))
    assert jig.bytes_to_hub < 1.1 * random_image.total_size


async def test_disconnect_resumes_without_resending_acknowledged_data(
    make_jig: Jigs, random_image: UpgradeImage
) -> None:
    jig = make_jig("disconnect@200000")
    ending, observer = await flash_once(jig, random_image)
    (resumed,) = observer.of("transfer_ended")
    assert resumed["resumed_from"] >= 200000
    assert (ending.outcome, ending.firmware_after) == (Outcome.REFLASHED, _target(random_image))
    assert len(jig.links) == 2
    assert jig.bytes_to_hub < 1.1 * random_image.total_size


async def test_corrupt_frames_from_the_hub_are_survived(make_jig: Jigs, image: UpgradeImage) -> None:
    jig = make_jig("corrupt-every=3")
    ending, _ = await flash_once(jig, image)
    assert (ending.outcome, ending.firmware_after) == (Outcome.REFLASHED, _target(image))
    assert jig.hub.frames_sent >= 3


async def test_silent_hub_is_a_clear_link_timeout_and_recovers(make_jig: Jigs, image: UpgradeImage) -> None:
    jig = make_jig("silent-after=20000", settings=dataclasses.replace(QUICK, max_stalls=2))
    ending, observer = await flash_once(jig, image, link_retries=1)
    assert (ending.outcome, ending.reason) == (Outcome.FAILED, JobReason.LINK_RETRIES_EXHAUSTED)
    assert [a["result"] for a in observer.of("attempt")] == ["link_error", "link_error"]
    assert LINK_TIMEOUT.search(ending.detail), ending.detail
    held = jig.hub.held
    assert held >= 20000
    await jig.power_cycle(Faults())
    ending, observer = await flash_once(jig, image)
    assert observer.of("transfer_ended")[0]["resumed_from"] == held
    assert (ending.outcome, ending.firmware_after) == (Outcome.REFLASHED, _target(image))


async def test_activation_failure_keeps_the_old_image_and_the_staged_one(make_jig: Jigs, image: UpgradeImage) -> None:
    jig = make_jig("activation-fail")
    ending, observer = await flash_once(jig, image)
    assert (ending.outcome, ending.reason) == (Outcome.QUARANTINED, JobReason.ACTIVATION_FAILURE)
    (activate,) = observer.of("activate")
    assert (activate["code"], activate["running"]) == (ActivationCode.ACTIVATION_FAILURE, OLD_VERSION)
    assert (await jig.read_version()).staged_version == _target(image)
    await jig.power_cycle(Faults())
    ending, observer = await flash_once(jig, image)
    assert observer.of("transfer_ended")[0]["resumed_from"] == image.total_size  # nothing sent again
    assert (ending.outcome, ending.firmware_after) == (Outcome.REFLASHED, _target(image))


async def test_old_version_after_reboot_is_not_success(make_jig: Jigs, image: UpgradeImage) -> None:
    jig = make_jig("old-version-after-reboot")
    ending, observer = await flash_once(jig, image)
    assert (ending.outcome, ending.reason) == (Outcome.QUARANTINED, JobReason.VERSION_NOT_TARGET_AFTER_ACTIVATE)
    assert [a["code"] for a in observer.of("activate")] == [ActivationCode.SUCCESS]  # it reported Success
    assert ending.detail == f"runs {OLD_VERSION}, target {_target(image)}"
    assert ending.firmware_after == OLD_VERSION
    await jig.power_cycle(Faults())
    ending, _ = await flash_once(jig, image)
    assert (ending.outcome, ending.firmware_after) == (Outcome.REFLASHED, _target(image))


async def test_refused_image_is_a_refusal_with_its_reason(make_jig: Jigs, image: UpgradeImage) -> None:
    jig = make_jig("refuse-image")
    ending, observer = await flash_once(jig, image)
    assert (ending.outcome, ending.reason) == (Outcome.FAILED, JobReason.TRANSFER_REFUSED_BY_HUB)
    assert f"transfer refused (reason {int(RefuseReason.REFUSED_BY_HUB)})" in ending.detail
    assert [a["result"] for a in observer.of("attempt")] == ["refused"]
    assert jig.bytes_to_hub < 1000
    after = await jig.identify()
    assert after.firmware_version == OLD_VERSION
    assert after.staged_version is None


async def test_stuck_hub_times_out_and_boots_the_old_image_after_power_cycle(
    make_jig: Jigs, image: UpgradeImage
) -> None:
    jig = make_jig("stuck")
    ending, observer = await flash_once(jig, image)
    assert (ending.outcome, ending.reason) == (Outcome.QUARANTINED, JobReason.HUB_UNRESPONSIVE_AFTER_ACTIVATE)
    (activate,) = observer.of("activate")
    assert activate["code"] is None
    assert "no answer to ACTIVATE" in activate["error"], activate
    assert LINK_TIMEOUT.search(ending.detail), ending.detail  # nor to the read-back after it
    await jig.power_cycle(Faults())
    identity = await jig.identify()
    assert identity.firmware_version == OLD_VERSION
    assert identity.staged_version == _target(image)
    ending, observer = await flash_once(jig, image)
    assert observer.of("transfer_ended")[0]["resumed_from"] == image.total_size
    assert (ending.outcome, ending.firmware_after) == (Outcome.REFLASHED, _target(image))
