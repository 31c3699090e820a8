"""One flash in a test, through the station's own sequence (station/flash.py `flash_image`), in one line.

`flash_once(driver, image)` returns the `Ending` and a `QuietObserver` holding every event in order: a test reads
what the hub runs from `ending.firmware_after`, how the flash ended from `(ending.outcome, ending.reason)` and
`ending.detail`, and what each step did from `observer.of("transfer_ended")`, `of("proof")`, `of("erased")`,
`of("attempt")`, `of("activate")`, `of("read_back")`.
"""

from __future__ import annotations

from typing import Any

from drivers.jig_driver import JigDriver, Progress
from firmware_catalog.image import UpgradeImage
from station.config import JobSettings
from station.flash import Ending, QuietObserver, flash_image, with_link_retries

__all__ = ["TEST_JOB_SETTINGS", "RecordingObserver", "flash_once", "staged_proofs"]

# A job's patience, with the waits cut for tests: link retries 0.01 s apart, the hub read back after activation
# every 0.05 s (a simulated hub reboots in 0.02 s). Deadlines stay the station's own.
TEST_JOB_SETTINGS = JobSettings(link_retries=3, retry_backoff_s=0.01, readback_tries=4, readback_interval_s=0.05)


class RecordingObserver(QuietObserver):
    """A `QuietObserver` that also passes the bytes acknowledged to `progress`, if given."""

    def __init__(self, progress: Progress | None = None) -> None:
        super().__init__()
        self._progress = progress

    def progress(self, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress(done, total)


async def flash_once(
    driver: JigDriver, image: UpgradeImage, progress: Progress | None = None, **settings: Any
) -> tuple[Ending, RecordingObserver]:
    """Run `flash_image` on `driver` with `TEST_JOB_SETTINGS` (overridden by `settings`, e.g. `link_retries=0`).

    As the station's job does before it flashes (the hub it scanned in), the driver must expect a hub: unless it
    already does, the hub that answers IDENTIFY first (with the settings' link retries) is expected for the flash, so
    a hub swapped mid-flash raises `HubSwapped`; the driver expects what it did before once the flash is over. Like
    `flash_image`, this raises `HubSwapped` and link failures outside the transfer's retries; every other end is the
    `Ending`.
    """
    job = JobSettings(**{**TEST_JOB_SETTINGS.model_dump(), **settings})
    observer = RecordingObserver(progress)
    pinned = driver.expected
    if pinned is None:
        driver.expect(await with_link_retries(driver.identify, job.link_retries + 1, job.retry_backoff_s))
    try:
        ending = await flash_image(driver, image, job, observer)
    finally:
        driver.expect(pinned)
    return ending, observer


def staged_proofs(observer: QuietObserver) -> list[bool]:
    """Whether each proof of the whole staged image succeeded, in order (a resume's proof is not one of them)."""
    return [proof["ok"] for proof in observer.of("proof") if proof["region"] == "staged" and "at" not in proof]
