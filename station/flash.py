"""One flash of one image onto one hub, and the only one: the station's job and `reflash jig flash` both run it.

Transfer (resuming where the hub proves it is), verify, prove the staged envelope (an unproven one is erased and sent
once more), identify again, activate, read back, prove the running envelope. The hub's own word is not evidence:
only a proof under a fresh nonce is. Every wait is bounded: requests and DATA frames time out on the line's own terms
(drivers/maintenance_port.py), link failures are retried `link_retries` times, and each phase (transfer; verify and
proof; activation and read-back) has a deadline computed from the image size and the line's rate (`bound`).

What happens is reported to a `FlashObserver` as it happens (the job's records it in the store and shows it on the
slot; the CLI's draws a progress bar); how it ended is an `Ending` with the station's outcome and reason code
(station/outcome.py), the same wherever the flash ran. A hub swapped on the jig raises `HubSwapped`, and a link that
fails outside the transfer's retries raises its error: neither is an ending, since nothing is known of the hub.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from drivers.errors import DataRejected, LinkError, ProofFailed, TransferRefused
from drivers.jig_driver import LINK_FAILURES, ActivationStatus, FlashTiming, ImageRegion, JigDriver, Verification
from firmware_catalog.image import UpgradeImage
from station.config import JobSettings
from station.outcome import JobReason, Outcome

__all__ = [
    "Ending",
    "FlashObserver",
    "FlashPhase",
    "QuietObserver",
    "confirm_running",
    "flash_image",
    "with_link_retries",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_ACTIVATION_REASONS = {
    ActivationStatus.NO_IMAGE_HELD: JobReason.ACTIVATION_NO_IMAGE_HELD,
    ActivationStatus.HASH_MISMATCH: JobReason.ACTIVATION_HASH_MISMATCH,
    ActivationStatus.ACTIVATION_FAILURE: JobReason.ACTIVATION_FAILURE,
}


@dataclass(frozen=True)
class Ending:
    """How a job (or a flash) ended: the outcome, its reason code, what happened in words, what the hub runs after
    (None when not read or not to be trusted), and the image it was about."""

    outcome: Outcome
    reason: str
    detail: str
    firmware_after: str | None = None
    target: str | None = None
    image_sha256: str | None = None
    hub_sha256: str | None = None
    upgrade_image_sha256: str | None = None


class FlashPhase(StrEnum):
    """The phases a flash goes through; their values are the slot states that show them."""

    TRANSFERRING = "transferring"
    VERIFYING = "verifying"
    ACTIVATING = "activating"


class FlashObserver(Protocol):
    """Told what a flash does, as it does it. Calls come from the event loop; none may block it for long."""

    def flashing(self, target: str, image_sha256: str, upgrade_image_sha256: str, size: int) -> None:
        """The flash of `target` begins: called before the first byte goes to the hub (a job remembers the step,
        so that a job resumed after activation knows what to prove)."""

    def phase(self, phase: FlashPhase, target: str, size: int) -> None: ...

    def progress(self, done: int, total: int) -> None:
        """Bytes of the image the hub has acknowledged."""

    def attempt_started(self, what: str) -> int:
        """A transfer attempt begins; returns its number."""
        ...

    def attempt_ended(self, number: int, result: str, detail: str, data_bytes: int) -> None:
        """`result`: ok, link_error, deadline, refused, rejected or proof_failed."""

    def event(self, kind: str, **data: Any) -> None:
        """A step worth a record of its own: transfer_ended, verified, proof, erased, activate, read_back."""


class QuietObserver:
    """An observer that keeps nothing but the events, in order (for a caller that only wants the ending, or a test
    that wants to see what happened)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._attempts = 0

    def flashing(self, target: str, image_sha256: str, upgrade_image_sha256: str, size: int) -> None:
        self.events.append(("flashing", {"target": target, "size": size}))

    def phase(self, phase: FlashPhase, target: str, size: int) -> None:
        self.events.append(("phase", {"phase": phase, "target": target}))

    def progress(self, done: int, total: int) -> None:
        pass

    def attempt_started(self, what: str) -> int:
        self._attempts += 1
        return self._attempts

    def attempt_ended(self, number: int, result: str, detail: str, data_bytes: int) -> None:
        self.events.append(("attempt", {"number": number, "result": result, "detail": detail, "bytes": data_bytes}))

    def event(self, kind: str, **data: Any) -> None:
        self.events.append((kind, data))

    def of(self, kind: str) -> list[dict[str, Any]]:
        """The events of one kind, in order."""
        return [data for name, data in self.events if name == kind]


async def with_link_retries(call: Callable[[], Awaitable[_T]], tries: int, interval: float) -> _T:
    """`call`, tried up to `tries` times `interval` apart while the link fails (closed, silent, or not opening)."""
    for attempt in range(tries):
        try:
            return await call()
        except LINK_FAILURES:
            if attempt == tries - 1:
                raise
            await asyncio.sleep(interval)
    raise AssertionError("unreachable")


def link_tries(settings: JobSettings) -> tuple[int, float]:
    """Tries and interval for a request before activation: the first and `link_retries` more."""
    return settings.link_retries + 1, settings.retry_backoff_s


def bound(settings: JobSettings, nominal_s: float, waits_s: float = 0.0) -> float:
    """A phase's deadline: `deadline_factor` x what a healthy hub needs at the line's rate (`nominal_s`), plus
    `deadline_slack_s`, plus the waits the settings themselves configure (`waits_s`: backoffs, timeouts)."""
    return settings.deadline_factor * nominal_s + settings.deadline_slack_s + waits_s


def transfer_bound(settings: JobSettings, timing: FlashTiming, size: int) -> float:
    backoffs = settings.retry_backoff_s * settings.link_retries * (settings.link_retries + 1) / 2
    return bound(settings, timing.transfer_s(size), backoffs)


def verify_bound(settings: JobSettings, timing: FlashTiming, size: int) -> float:
    return bound(settings, timing.verify_s(size), settings.retry_backoff_s * settings.link_retries)


def activate_bound(settings: JobSettings, timing: FlashTiming, size: int) -> float:
    waits = timing.activate_timeout_s + settings.readback_tries * settings.readback_interval_s
    return bound(settings, timing.activate_s(size), waits)


def _describe(limit: float, timing: FlashTiming) -> str:
    return f"{limit:.1f} s deadline ({timing.baud} baud)"


async def _drop_link(driver: JigDriver) -> None:
    """After a deadline cut a phase short: close the session, so that nothing half-done lingers on it; the next
    request opens a fresh one (and identifies the hub again)."""
    try:
        await driver.close()
    except (LinkError, OSError):
        log.debug("closing the link after a deadline failed", exc_info=True)


@dataclass(frozen=True)
class _Flash:
    """One flash in progress: what it is of, where it reports, and how patient it is."""

    driver: JigDriver
    image: UpgradeImage
    settings: JobSettings
    observer: FlashObserver

    @property
    def target(self) -> str:
        return f"{self.image.file_version:08X}"

    def ending(self, outcome: Outcome, reason: str, detail: str, hub_sha: str | None = None,
               firmware_after: str | None = None) -> Ending:  # fmt: skip
        image = self.image
        return Ending(outcome, reason, detail, firmware_after, self.target, image.manufacturer_image_sha256, hub_sha,
                      image.upgrade_image_sha256)  # fmt: skip


async def flash_image(driver: JigDriver, image: UpgradeImage, settings: JobSettings, observer: FlashObserver) -> Ending:
    """Flash `image` onto the hub the driver expects and prove it runs it. REFLASHED only when the hub proved, under
    fresh nonces, that it holds the whole envelope before activation and runs it after, and reads back the target."""
    run = _Flash(driver, image, settings, observer)
    observer.flashing(run.target, image.manufacturer_image_sha256, image.upgrade_image_sha256, image.total_size)
    verification: Verification | None = None
    for round_ in range(2):
        ended = await _transfer(run)
        if ended is not None:
            return ended
        observer.phase(FlashPhase.VERIFYING, run.target, image.total_size)
        timing = driver.timing()
        limit = verify_bound(settings, timing, image.total_size)
        try:
            async with asyncio.timeout(limit) as phase:
                ended, verification, proven = await _check_staged(run, round_)
                if proven:
                    # The hub about to activate must still be the one this flash is for, even if the link never
                    # dropped.
                    await with_link_retries(driver.identify, *link_tries(settings))
        except TimeoutError:
            if not phase.expired():
                raise
            await _drop_link(driver)
            detail = f"verifying and proving the staged image did not finish within its {_describe(limit, timing)}"
            return run.ending(Outcome.FAILED, JobReason.VERIFY_DEADLINE_EXCEEDED, detail)
        if ended is not None:
            return ended
        if proven:
            break
    assert verification is not None
    observer.phase(FlashPhase.ACTIVATING, run.target, image.total_size)
    return await _activation_phase(run, hub_sha=verification.sha256, activate=True)


async def confirm_running(
    driver: JigDriver, image: UpgradeImage, settings: JobSettings, observer: FlashObserver
) -> Ending:
    """The checks after activation alone (read back, prove the running envelope), for a hub whose activation went
    through while the station was not looking (a job resumed after a stop)."""
    run = _Flash(driver, image, settings, observer)
    observer.phase(FlashPhase.VERIFYING, run.target, image.total_size)
    return await _activation_phase(run, hub_sha=None, activate=False)


async def _transfer(run: _Flash) -> Ending | None:
    """Send the image, resuming where the hub proves it is. Returns an ending when the transfer cannot be done.

    Every attempt and every backoff between attempts lies within the transfer phase's deadline."""
    driver, image, settings, observer = run.driver, run.image, run.settings, run.observer
    held = 0

    def progress(done: int, total: int) -> None:
        nonlocal held
        held = done
        observer.progress(done, total)

    timing = driver.timing()
    limit = transfer_bound(settings, timing, image.total_size)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    observer.phase(FlashPhase.TRANSFERRING, run.target, image.total_size)
    for attempt in range(settings.link_retries + 1):
        number = observer.attempt_started(f"transfer to {run.target}")
        try:
            async with asyncio.timeout_at(deadline) as phase:
                stats = await driver.transfer(image, progress)
        except TimeoutError:
            if not phase.expired():
                raise
            detail = (
                f"the transfer did not finish within its {_describe(limit, timing)}: the hub acknowledged {held} of "
                f"{image.total_size} bytes, and keeps them for the next visit"
            )
            observer.attempt_ended(number, "deadline", detail, 0)
            await _drop_link(driver)
            return run.ending(Outcome.FAILED, JobReason.TRANSFER_DEADLINE_EXCEEDED, detail)
        except LINK_FAILURES as exc:
            observer.attempt_ended(number, "link_error", str(exc), 0)
            if attempt == settings.link_retries:
                return run.ending(Outcome.FAILED, JobReason.LINK_RETRIES_EXHAUSTED, str(exc))
            backoff = settings.retry_backoff_s * (attempt + 1)
            if loop.time() + backoff >= deadline:
                await asyncio.sleep(max(0.0, deadline - loop.time()))
                detail = (
                    f"the transfer did not finish within its {_describe(limit, timing)} (the link failed: {exc}); "
                    f"the hub keeps the {held} bytes it acknowledged for the next visit"
                )
                return run.ending(Outcome.FAILED, JobReason.TRANSFER_DEADLINE_EXCEEDED, detail)
            await asyncio.sleep(backoff)
            continue
        except TransferRefused as exc:
            observer.attempt_ended(number, "refused", str(exc), 0)
            return run.ending(Outcome.FAILED, JobReason.TRANSFER_REFUSED_BY_HUB, str(exc))
        except DataRejected as exc:
            # Not a link fault that another session would cure: the hub heard every frame and refused the data.
            observer.attempt_ended(number, "rejected", str(exc), 0)
            return run.ending(Outcome.FAILED, JobReason.HUB_REJECTS_DATA, str(exc))
        except ProofFailed as exc:
            # The hub claimed a prefix it could not prove, was erased, and still claimed it: a liar.
            observer.attempt_ended(number, "proof_failed", str(exc), 0)
            observer.event("proof", region="staged", ok=False, held=exc.held, length=None, at="resume")
            return run.ending(Outcome.QUARANTINED, JobReason.HUB_PROOF_FAILED, str(exc))
        resumed = "" if stats.resume_proven is None else " (proven)"
        observer.attempt_ended(
            number,
            "ok",
            f"resumed from {stats.resumed_from}{resumed}, {'erased an unproven prefix, ' if stats.erased else ''}"
            f"{stats.compression.name}, {stats.retransmitted_frames} resent",
            stats.data_bytes,
        )
        observer.event(
            "transfer_ended",
            resumed_from=stats.resumed_from,
            resume_proven=stats.resume_proven,
            erased=stats.erased,
            data_bytes=stats.data_bytes,
            frames=stats.frames,
            retransmitted_frames=stats.retransmitted_frames,
            image_bytes_sent=stats.image_bytes_sent,
            timeouts=stats.timeouts,
            naks=stats.naks,
            stalls=stats.stalls,
            compression=stats.compression.name,
            elapsed_s=round(stats.elapsed_s, 3),
        )
        return None
    raise AssertionError("unreachable")


async def _check_staged(run: _Flash, round_: int) -> tuple[Ending | None, Verification, bool]:
    """VERIFY and PROVE the staged image: (an ending, the verification, whether it is proven). Unproven in the first
    round, the hub is erased, to be sent the image once more."""
    driver, image, observer = run.driver, run.image, run.observer
    tries, interval = link_tries(run.settings)
    sha = image.manufacturer_image_sha256
    verification = await with_link_retries(driver.verify, tries, interval)
    observer.event(
        "verified",
        held=verification.held,
        total_size=verification.total_size,
        hub_sha256=verification.sha256,
        signature_ok=verification.signature_ok,
    )
    if verification.held != image.total_size or verification.sha256 != sha:
        detail = f"hub holds {verification.held}/{image.total_size} bytes, hash {verification.sha256}"
        return run.ending(Outcome.FAILED, JobReason.HUB_HASH_MISMATCH, detail, verification.sha256), verification, False
    if not verification.signature_ok:
        ending = run.ending(Outcome.FAILED, JobReason.HUB_SIGNATURE_REJECTED, "hub's signature check failed")
        return ending, verification, False
    # VERIFY is the hub's word; the proof is evidence: a MAC under a fresh nonce over every byte of the envelope.
    proof = await with_link_retries(lambda: driver.prove(image, ImageRegion.STAGED), tries, interval)
    observer.event("proof", region="staged", ok=proof.ok, held=proof.held, length=proof.length)
    if proof.ok:
        return None, verification, True
    if round_ == 1:
        ending = run.ending(
            Outcome.QUARANTINED,
            JobReason.HUB_PROOF_FAILED,
            f"the hub could not prove it holds the {image.total_size}-byte image after an erase and a fresh "
            f"transfer (it holds {proof.held} bytes)",
            verification.sha256,
        )
        return ending, verification, False
    # Flash that lost bytes, or a hub that lied: forget what it holds and send it all again, once.
    await with_link_retries(driver.erase, tries, interval)
    observer.event("erased", cause="the staged image was not proven")
    return None, verification, False


async def _activation_phase(run: _Flash, hub_sha: str | None, activate: bool) -> Ending:
    """ACTIVATE (unless the hub already runs the target: a resumed job), then read back and prove the running
    image, all within the activation phase's deadline."""
    driver, image = run.driver, run.image
    timing = driver.timing()
    limit = activate_bound(run.settings, timing, image.total_size)
    try:
        async with asyncio.timeout(limit) as phase:
            if activate:
                ended = await _activate(run, hub_sha)
                if ended is not None:
                    return ended
            return await _confirm_running(run, hub_sha)
    except TimeoutError:
        if not phase.expired():
            raise
        await _drop_link(driver)
        detail = f"activation and read-back did not finish within their {_describe(limit, timing)}"
        run.observer.event("read_back", running=None, error=detail)
        return run.ending(Outcome.QUARANTINED, JobReason.ACTIVATE_DEADLINE_EXCEEDED, detail, hub_sha)


async def _activate(run: _Flash, hub_sha: str | None) -> Ending | None:
    image, observer = run.image, run.observer
    try:
        activation = await run.driver.activate(image.manufacturer_image_sha256, image.upgrade_image_sha256)
    except LINK_FAILURES as exc:
        # The hub may be rebooting into the new image; what it runs now is the question that decides.
        observer.event("activate", code=None, error=str(exc))
        return None
    observer.event("activate", code=activation.code, running=activation.running_version)
    if activation.status is not ActivationStatus.SUCCESS:
        reason = _ACTIVATION_REASONS[activation.status]
        return run.ending(Outcome.QUARANTINED, reason, f"CS06 {activation.code}", hub_sha)
    return None


async def _confirm_running(run: _Flash, hub_sha: str | None) -> Ending:
    """After activation: the hub must read back the target and prove it runs the envelope."""
    driver, image, observer, target = run.driver, run.image, run.observer, run.target
    tries, interval = run.settings.readback_tries, run.settings.readback_interval_s
    try:
        version = await with_link_retries(driver.read_version, tries, interval)
    except LINK_FAILURES as exc:
        observer.event("read_back", running=None, error=str(exc))
        return run.ending(Outcome.QUARANTINED, JobReason.HUB_UNRESPONSIVE_AFTER_ACTIVATE, str(exc), hub_sha)
    observer.event("read_back", running=version.running_version, staged=version.staged_version)
    if version.running_version != target:
        return run.ending(
            Outcome.QUARANTINED,
            JobReason.VERSION_NOT_TARGET_AFTER_ACTIVATE,
            f"runs {version.running_version}, target {target}",
            hub_sha,
            version.running_version,
        )
    proof = await with_link_retries(lambda: driver.prove(image, ImageRegion.RUNNING), tries, interval)
    observer.event("proof", region="running", ok=proof.ok, held=proof.held, length=proof.length)
    if not proof.ok:
        # It says it runs the target but cannot show the bytes: what it runs is unknown, so nothing is claimed.
        return run.ending(
            Outcome.QUARANTINED,
            JobReason.RUNNING_IMAGE_UNPROVEN,
            f"reports {version.running_version} but could not prove it runs image {image.upgrade_image_sha256[:16]}",
            hub_sha,
        )
    return run.ending(Outcome.REFLASHED, JobReason.REFLASHED, f"runs {target}, proven", hub_sha,
                      version.running_version)  # fmt: skip
