"""One hub's way through the station: identify, match to an order, decide, flash, prove, activate, read back,
prove again, and the one transaction that records the outcome.

What the station reports must be what the hub runs, and the hub in the record must be the hub on the jig:
- The job pins the hub's identity on its driver: a connection that finds another hub raises HubSwapped before any
  request reaches it, and the job stops without an outcome (the other hub gets a job of its own).
- The hub's own word is not evidence. Before ACTIVATE the hub proves, under a fresh nonce, that it holds the
  catalog's whole envelope; a failed proof erases and sends again once, then quarantines. After activation it must
  read back the target AND prove it runs that envelope. Only then is it REFLASHED.
- A flash step is remembered (target, envelope) before the first byte is sent. A job resumed after a stop whose
  hub already runs that target goes straight to the post-activation checks and ends REFLASHED, never
  ALREADY_CURRENT with the old version.
- Every result carries the version read from the hub at the end of the job (`firmware_after`), or null when the
  station could not read it or cannot trust what it read; the DSP applies it when it is not null.

A job that stops without an outcome (the station is stopping, no catalog is in force, the link failed, another
hub is on the jig) is marked interrupted, never done, and resumes when its hub is seen again.

Every wait is bounded. Requests and DATA frames time out on the line's own terms (drivers/maintenance_port.py),
retries follow `link_retries` for every kind of link failure (closed, silent, or a transport that would not open),
and each phase of a flash (transfer; verify and proof; activation and read-back) has a deadline computed from the
image size and the line's rate (`_bound`). A phase past its deadline ends the job with its own reason code.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from drivers.errors import DataRejected, HubSwapped, LinkError, ProofFailed, ProtocolError, TransferRefused
from drivers.jig_driver import LINK_FAILURES, ActivationStatus, FlashTiming, ImageRegion, JigDriver, Verification
from firmware_catalog.catalog import Catalog
from firmware_catalog.errors import CatalogError
from firmware_catalog.hub import HubIdentity
from firmware_catalog.image import UpgradeImage, parse_image
from firmware_catalog.policy import Decision, decide
from firmware_catalog.reason import ReasonCode
from station import crash_point
from station.audit import AuditEntry
from station.config import JobSettings, Tariff
from station.messages import hub_result
from station.outcome import Interruption, JobReason, Outcome
from station.slot import SlotState, SlotView
from station.store import FlashStep, JobRecord, Store

__all__ = ["JobContext", "JobSettings", "NotScannedIn", "run_job"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")
# How often a transfer in progress is said in the logs (`transfer_progress`): a long one is seen moving.
TRANSFER_PROGRESS_EVERY_S = 5.0

_CATALOG_CODES = {
    ReasonCode.CATALOG_EXPIRED,
    ReasonCode.CATALOG_SIGNATURE_INVALID,
    ReasonCode.CATALOG_ROLLBACK,
    ReasonCode.CATALOG_MALFORMED,
}
_ACTIVATION_REASONS = {
    ActivationStatus.NO_IMAGE_HELD: JobReason.ACTIVATION_NO_IMAGE_HELD,
    ActivationStatus.HASH_MISMATCH: JobReason.ACTIVATION_HASH_MISMATCH,
    ActivationStatus.ACTIVATION_FAILURE: JobReason.ACTIVATION_FAILURE,
}


@dataclass
class JobContext:
    store: Store
    catalog: Callable[[], Catalog | None]
    tariff: Tariff
    station: str
    region: str
    settings: JobSettings
    emit: Callable[..., None]
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    # `[station] require_scan_in`: a hub an order names is flashed only once it was scanned in to that order.
    require_scan_in: bool = True


@dataclass(frozen=True)
class _Ending:
    outcome: Outcome
    reason: str
    detail: str
    firmware_after: str | None = None
    target: str | None = None
    image_sha256: str | None = None
    hub_sha256: str | None = None
    upgrade_image_sha256: str | None = None


_Fail = Callable[..., _Ending]

# Endings after which the hub is asked once more what it runs, so that the result carries it. Not after a dead
# link (it would only time out), nor when the hub has shown that its answers cannot be trusted.
_READ_AT_END = {
    JobReason.TRANSFER_REFUSED_BY_HUB,
    JobReason.HUB_REJECTS_DATA,
    JobReason.TRANSFER_DEADLINE_EXCEEDED,
    JobReason.VERIFY_DEADLINE_EXCEEDED,
    JobReason.HUB_HASH_MISMATCH,
    JobReason.HUB_SIGNATURE_REJECTED,
    JobReason.HUB_PROOF_FAILED,
    JobReason.ACTIVATION_NO_IMAGE_HELD,
    JobReason.ACTIVATION_HASH_MISMATCH,
    JobReason.ACTIVATION_FAILURE,
    JobReason.PROTOCOL_ERROR,
}


class NotScannedIn(Exception):
    """The hub is named by an open order but was not scanned in to it: nothing is started or recorded for it until
    it is (custody begins at scan-in, docs/station.md)."""

    def __init__(self, chf_id: str, order_ref: str) -> None:
        super().__init__(f"not scanned in to order {order_ref}: scan it in (reflash orders receive) to flash it")
        self.chf_id = chf_id
        self.order_ref = order_ref


class _Held(Exception):
    """The job cannot go on now and must not get an outcome (no catalog in force)."""


async def run_job(driver: JigDriver, identity: HubIdentity, slot: SlotView, ctx: JobContext) -> JobRecord | None:
    """Process the hub on `slot`. Returns its final record, or None when it was held or already done."""
    store = ctx.store
    chf_id, gpf_id = identity.chf_id, identity.gpf_id
    if chf_id is None or gpf_id is None:
        raise ProtocolError("the hub did not report its CHF and GPF device IDs")
    order_ref = store.open_order_for(chf_id)
    if order_ref is not None and (done := store.final_job(chf_id, order_ref)) is not None:
        slot.enter(SlotState.DONE, f"already {done.outcome} in order {order_ref}")
        return None
    if order_ref is None and (last := store.latest_job(chf_id)) is not None and last.outcome == "UNEXPECTED":
        # Reported once as UNEXPECTED and still in no open order: a restart or a re-seat is not news for the DSP.
        # The hub is released by an order that names it (it is then processed) or by dispatching it.
        slot.enter(SlotState.DONE, f"already reported UNEXPECTED at {last.finished_at}; no open order names it")
        return None
    if order_ref is not None and ctx.require_scan_in and not store.scanned_in(chf_id, order_ref):
        raise NotScannedIn(chf_id, order_ref)
    slot.hub(chf_id, gpf_id, order_ref, identity.firmware_version)
    # An interrupted job of this hub in this order is resumed, not begun again: the logs say which, as the audit does.
    resumes = any(
        job.order_ref == order_ref and job.state in ("interrupted", "running") for job in store.jobs(chf_id=chf_id)
    )
    job_id = store.start_job(
        chf_id=chf_id, gpf_id=gpf_id, order_ref=order_ref, slot=slot.name, identity=identity.model_dump()
    )
    ctx.emit("job_resumed" if resumes else "job_started", slot=slot.name, chf_id=chf_id, order_ref=order_ref,
             job_id=job_id)  # fmt: skip
    driver.expect(identity)
    try:
        try:
            ending = await _process(driver, identity, slot, ctx, job_id, order_ref)
        except ProtocolError as exc:
            ending = _Ending(Outcome.QUARANTINED, JobReason.PROTOCOL_ERROR, str(exc))
        ending = await _read_at_end(driver, ending)
    except asyncio.CancelledError:
        store.suspend_job(job_id, "station stopping", code=Interruption.STATION_STOPPING.value)
        slot.enter(SlotState.HELD, "interrupted: station stopping")
        raise
    except _Held as held:
        store.suspend_job(job_id, str(held), code=Interruption.NO_CATALOG.value)
        slot.enter(SlotState.HELD, str(held))
        ctx.emit("job_held", slot=slot.name, chf_id=chf_id, cause=str(held))
        return None
    except HubSwapped as swap:
        # The facts gathered so far are the first hub's (every connection is checked before it is used), but it
        # is no longer here to finish with: its job waits, without an outcome, for it to be seen again.
        store.suspend_job(
            job_id,
            f"another hub is on the jig: {swap}",
            code=Interruption.HUB_SWAPPED.value,
            expected=swap.expected.model_dump(),
            found=swap.found.model_dump(),
        )
        slot.enter(SlotState.HELD, f"hub swapped: {chf_id} left, {swap.found.chf_id} is on the jig")
        ctx.emit("hub_swapped", slot=slot.name, chf_id=chf_id, found=swap.found.chf_id, job_id=job_id)
        return None
    except (LinkError, OSError) as exc:
        # The link failed outside the transfer's own retries, or the jig went away: no outcome yet.
        store.suspend_job(job_id, f"link failed: {exc}", code=Interruption.LINK_FAILED.value)
        slot.enter(SlotState.HELD, f"link failed: {exc}")
        raise
    finally:
        driver.expect(None)
    return _record(ctx, job_id, order_ref, slot, ending)


async def _read_at_end(driver: JigDriver, ending: _Ending) -> _Ending:
    """The version the hub runs as the job ends, for the result (the DSP applies it). Best effort: null if not read."""
    if ending.firmware_after is not None or ending.reason not in _READ_AT_END:
        return ending
    try:
        version = await driver.read_version()
    except (LinkError, OSError, ProtocolError, HubSwapped):
        return ending
    return dataclasses.replace(ending, firmware_after=version.running_version)


def _record(ctx: JobContext, job_id: int, order_ref: str | None, slot: SlotView, ending: _Ending) -> JobRecord:
    store = ctx.store
    party = store.order(order_ref)["requesting_party"] if order_ref is not None else None

    def report(job: JobRecord, entry: AuditEntry, message_id: str) -> dict[str, Any]:
        return hub_result(job, entry.hash, message_id, station=ctx.station, region=ctx.region, requesting_party=party)

    record = store.finish_job(
        job_id,
        outcome=ending.outcome,
        reason=ending.reason,
        firmware_after=ending.firmware_after,
        target_version=ending.target,
        image_sha256=ending.image_sha256,
        hub_sha256=ending.hub_sha256,
        upgrade_image_sha256=ending.upgrade_image_sha256,
        charge_pence=ctx.tariff.pence(ending.outcome) if order_ref is not None else 0,
        currency=ctx.tariff.currency,
        report=report,
    )
    slot.finish(record.chf_id, ending.outcome, ending.reason)
    ctx.emit(
        "job_finished",
        slot=slot.name,
        chf_id=record.chf_id,
        outcome=ending.outcome.value,
        reason=ending.reason,
        firmware_before=record.firmware_before,
        firmware_after=record.firmware_after,
        detail=ending.detail,
    )
    return record


async def _process(
    driver: JigDriver, identity: HubIdentity, slot: SlotView, ctx: JobContext, job_id: int, order_ref: str | None
) -> _Ending:
    if order_ref is None:
        return _Ending(
            Outcome.UNEXPECTED, JobReason.NOT_IN_OPEN_ORDER, "no open order names this hub; held",
            identity.firmware_version,
        )  # fmt: skip
    current = identity
    flashed: _Ending | None = None
    step = ctx.store.flash_step(job_id)
    if step is not None and current.firmware_version == step.target:
        # This job began flashing this target before it stopped, and the hub now runs it: the activation went
        # through. Finish that step with the post-activation checks, as if the job had never stopped.
        flashed = await _resume_activated(driver, step, slot, ctx, job_id)
        if flashed.outcome is not Outcome.REFLASHED:
            return flashed
    for _ in range(ctx.settings.max_steps):
        catalog = ctx.catalog()
        if catalog is None:
            raise _Held("no catalog in force")
        # The policy reads image files: off the event loop, which every slot's link shares.
        decision = await asyncio.to_thread(decide, current, catalog, ctx.clock())
        entry = decision.entry
        ctx.store.record_event(
            job_id,
            "decision",
            code=decision.code.value,
            message=decision.message,
            catalog_serial=decision.catalog_serial,
            firmware=current.firmware_version,
            target=entry.firmware_version if entry else None,
            cpl_id=entry.cpl_id if entry else None,
        )
        ctx.emit("decision", slot=slot.name, chf_id=current.chf_id, code=decision.code.value, message=decision.message)
        if decision.code in _CATALOG_CODES:
            raise _Held(f"catalog: {decision.code.value}")
        if decision.code is ReasonCode.ALREADY_CURRENT or (flashed is not None and not decision.flash):
            # After a flash, the next step being refused still leaves the hub on approved firmware it reached.
            return flashed or _Ending(
                Outcome.ALREADY_CURRENT, ReasonCode.ALREADY_CURRENT, decision.message, current.firmware_version
            )
        if not decision.flash:
            outcome = Outcome.SCRAP if decision.code is ReasonCode.TARGET_PAST_IVP else Outcome.REFUSED
            return _Ending(outcome, decision.code, decision.message, current.firmware_version)
        step_ending = await _flash(driver, decision, slot, ctx, job_id)
        if step_ending.outcome is not Outcome.REFLASHED:
            return step_ending
        flashed = step_ending
        current = current.model_copy(update={"firmware_version": step_ending.firmware_after})
    return flashed or _Ending(Outcome.FAILED, JobReason.PROTOCOL_ERROR, "no step was taken")


async def _with_link_retries(call: Callable[[], Awaitable[_T]], tries: int, interval: float) -> _T:
    """`call`, tried up to `tries` times `interval` apart while the link fails (closed, silent, or not opening)."""
    for attempt in range(tries):
        try:
            return await call()
        except LINK_FAILURES:
            if attempt == tries - 1:
                raise
            await asyncio.sleep(interval)
    raise AssertionError("unreachable")


def _link_tries(settings: JobSettings) -> tuple[int, float]:
    """Tries and interval for a request before activation: the first and `link_retries` more."""
    return settings.link_retries + 1, settings.retry_backoff_s


def _bound(settings: JobSettings, nominal_s: float, waits_s: float = 0.0) -> float:
    """A phase's deadline: `deadline_factor` x what a healthy hub needs at the line's rate (`nominal_s`), plus
    `deadline_slack_s`, plus the waits the settings themselves configure (`waits_s`: backoffs, timeouts)."""
    return settings.deadline_factor * nominal_s + settings.deadline_slack_s + waits_s


def _transfer_bound(settings: JobSettings, timing: FlashTiming, size: int) -> float:
    backoffs = settings.retry_backoff_s * settings.link_retries * (settings.link_retries + 1) / 2
    return _bound(settings, timing.transfer_s(size), backoffs)


def _verify_bound(settings: JobSettings, timing: FlashTiming, size: int) -> float:
    return _bound(settings, timing.verify_s(size), settings.retry_backoff_s * settings.link_retries)


def _activate_bound(settings: JobSettings, timing: FlashTiming, size: int) -> float:
    waits = timing.activate_timeout_s + settings.readback_tries * settings.readback_interval_s
    return _bound(settings, timing.activate_s(size), waits)


def _describe(bound: float, timing: FlashTiming) -> str:
    return f"{bound:.1f} s deadline ({timing.baud} baud)"


async def _drop_link(driver: JigDriver) -> None:
    """After a deadline cut a phase short: close the session, so that nothing half-done lingers on it; the next
    request opens a fresh one (and identifies the hub again)."""
    try:
        await driver.close()
    except (LinkError, OSError):
        log.debug("closing the link after a deadline failed", exc_info=True)


def _catalog_image(catalog: Catalog, upgrade_image_sha256: str) -> UpgradeImage | None:
    """The image file of the catalog in force whose whole-file hash is `upgrade_image_sha256`, if it holds one.
    It reads files: call it off the event loop (`asyncio.to_thread`)."""
    for entry in catalog.document.entries:
        if entry.upgrade_image_sha256 != upgrade_image_sha256:
            continue
        try:
            # Read as the policy reads it: a regular file inside the folder, never more than the entry's size.
            image = parse_image(catalog.image_bytes(entry))
        except CatalogError:  # ImageFileRefused, ImageFormatError
            continue
        if image.upgrade_image_sha256 == upgrade_image_sha256:
            return image
    return None


async def _resume_activated(
    driver: JigDriver, step: FlashStep, slot: SlotView, ctx: JobContext, job_id: int
) -> _Ending:
    catalog = ctx.catalog()
    if catalog is None:
        raise _Held("no catalog in force")
    ctx.store.record_event(
        job_id, "resumed_after_activation", target=step.target, upgrade_image_sha256=step.upgrade_image_sha256
    )
    image = await asyncio.to_thread(_catalog_image, catalog, step.upgrade_image_sha256)
    if image is None:
        return _Ending(
            Outcome.QUARANTINED,
            JobReason.RUNNING_IMAGE_UNPROVEN,
            f"the hub runs {step.target}, but the catalog in force no longer holds image "
            f"{step.upgrade_image_sha256[:16]} to prove it against",
            None, step.target, step.image_sha256, None, step.upgrade_image_sha256,
        )  # fmt: skip
    slot.enter(SlotState.VERIFYING, target=step.target)
    return await _activation_phase(driver, image, step.target, ctx, job_id, hub_sha=None, activate=None)


async def _transfer(
    driver: JigDriver, image: UpgradeImage, slot: SlotView, ctx: JobContext, job_id: int, fail: _Fail
) -> _Ending | None:
    """Send the image, resuming where the hub proves it is. Returns an ending when the transfer cannot be done.

    Every attempt and every backoff between attempts lies within the transfer phase's deadline."""
    store, settings = ctx.store, ctx.settings
    target = f"{image.file_version:08X}"
    half = image.total_size // 2
    held = 0

    said_at = time.monotonic()

    def progress(done: int, total: int) -> None:
        nonlocal held, said_at
        held = done
        slot.progress(done, total)
        if done >= half:
            crash_point.reached("transfer_half")
        # A long transfer is said every few seconds in the logs (the live table shows every step); a short one never.
        if (now := time.monotonic()) - said_at >= TRANSFER_PROGRESS_EVERY_S and done < total:
            said_at = now
            eta = slot.eta_s
            ctx.emit("transfer_progress", slot=slot.name, chf_id=slot.chf_id, bytes_done=done, bytes_total=total,
                     percent=100 * done // total if total else 0, bytes_per_s=round(slot.bytes_per_s),
                     eta_s=None if eta is None else round(eta))  # fmt: skip

    timing = driver.timing()
    bound = _transfer_bound(settings, timing, image.total_size)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    slot.transferring(target, image.total_size)
    for attempt in range(settings.link_retries + 1):
        number = store.begin_attempt(job_id, f"transfer to {target}")
        try:
            async with asyncio.timeout_at(deadline) as phase:
                stats = await driver.transfer(image, progress)
        except TimeoutError:
            if not phase.expired():
                raise
            detail = (
                f"the transfer did not finish within its {_describe(bound, timing)}: the hub acknowledged {held} of "
                f"{image.total_size} bytes, and keeps them for the next visit"
            )
            store.end_attempt(job_id, number, "deadline", detail, 0)
            await _drop_link(driver)
            return fail(Outcome.FAILED, JobReason.TRANSFER_DEADLINE_EXCEEDED, detail)
        except LINK_FAILURES as exc:
            store.end_attempt(job_id, number, "link_error", str(exc), 0)
            ctx.emit("link_error", slot=slot.name, attempt=number, error=str(exc))
            if attempt == settings.link_retries:
                return fail(Outcome.FAILED, JobReason.LINK_RETRIES_EXHAUSTED, str(exc))
            backoff = settings.retry_backoff_s * (attempt + 1)
            if loop.time() + backoff >= deadline:
                await asyncio.sleep(max(0.0, deadline - loop.time()))
                detail = (
                    f"the transfer did not finish within its {_describe(bound, timing)} (the link failed: {exc}); "
                    f"the hub keeps the {held} bytes it acknowledged for the next visit"
                )
                return fail(Outcome.FAILED, JobReason.TRANSFER_DEADLINE_EXCEEDED, detail)
            await asyncio.sleep(backoff)
            continue
        except TransferRefused as exc:
            store.end_attempt(job_id, number, "refused", str(exc), 0)
            return fail(Outcome.FAILED, JobReason.TRANSFER_REFUSED_BY_HUB, str(exc))
        except DataRejected as exc:
            # Not a link fault that another session would cure: the hub heard every frame and refused the data.
            store.end_attempt(job_id, number, "rejected", str(exc), 0)
            return fail(Outcome.FAILED, JobReason.HUB_REJECTS_DATA, str(exc))
        except ProofFailed as exc:
            # The hub claimed a prefix it could not prove, was erased, and still claimed it: a liar.
            store.end_attempt(job_id, number, "proof_failed", str(exc), 0)
            store.record_event(job_id, "proof", region="staged", ok=False, held=exc.held, length=None, at="resume")
            return fail(Outcome.QUARANTINED, JobReason.HUB_PROOF_FAILED, str(exc))
        resumed = "" if stats.resume_proven is None else " (proven)"
        store.end_attempt(
            job_id,
            number,
            "ok",
            f"resumed from {stats.resumed_from}{resumed}, {'erased an unproven prefix, ' if stats.erased else ''}"
            f"{stats.compression.name}, {stats.retransmitted_frames} resent",
            stats.data_bytes,
        )
        store.record_event(
            job_id,
            "transfer_ended",
            resumed_from=stats.resumed_from,
            resume_proven=stats.resume_proven,
            erased=stats.erased,
            data_bytes=stats.data_bytes,
            frames=stats.frames,
            retransmitted_frames=stats.retransmitted_frames,
            compression=stats.compression.name,
            elapsed_s=round(stats.elapsed_s, 3),
        )
        return None
    raise AssertionError("unreachable")


async def _flash(driver: JigDriver, decision: Decision, slot: SlotView, ctx: JobContext, job_id: int) -> _Ending:
    store, settings = ctx.store, ctx.settings
    image, entry = decision.image, decision.entry
    assert image is not None
    assert entry is not None
    target, sha, envelope = entry.firmware_version, entry.manufacturer_image_sha256, image.upgrade_image_sha256

    def fail(outcome: Outcome, reason: str, detail: str, hub_sha: str | None = None) -> _Ending:
        return _Ending(outcome, reason, detail, None, target, sha, hub_sha, envelope)

    store.begin_step(job_id, FlashStep(target, sha, envelope), size=image.total_size)
    verification: Verification | None = None
    for round_ in range(2):
        ended = await _transfer(driver, image, slot, ctx, job_id, fail)
        if ended is not None:
            return ended
        slot.enter(SlotState.VERIFYING)
        timing = driver.timing()
        bound = _verify_bound(settings, timing, image.total_size)
        try:
            async with asyncio.timeout(bound) as phase:
                ended, verification, proven = await _check_staged(driver, image, ctx, job_id, fail, round_)
                if proven:
                    # The hub about to activate must still be the one this job decided for, even if the link never
                    # dropped.
                    await _with_link_retries(driver.identify, *_link_tries(settings))
        except TimeoutError:
            if not phase.expired():
                raise
            await _drop_link(driver)
            detail = f"verifying and proving the staged image did not finish within its {_describe(bound, timing)}"
            return fail(Outcome.FAILED, JobReason.VERIFY_DEADLINE_EXCEEDED, detail)
        if ended is not None:
            return ended
        if proven:
            break
    assert verification is not None
    slot.enter(SlotState.ACTIVATING)
    crash_point.reached("activating")
    return await _activation_phase(driver, image, target, ctx, job_id, hub_sha=verification.sha256, activate=sha)


async def _check_staged(
    driver: JigDriver, image: UpgradeImage, ctx: JobContext, job_id: int, fail: _Fail, round_: int
) -> tuple[_Ending | None, Verification, bool]:
    """VERIFY and PROVE the staged image: (an ending, the verification, whether it is proven). Unproven in the first
    round, the hub is erased, to be sent the image once more."""
    store = ctx.store
    tries, interval = _link_tries(ctx.settings)
    sha = image.manufacturer_image_sha256
    verification = await _with_link_retries(driver.verify, tries, interval)
    store.record_event(
        job_id,
        "verified",
        held=verification.held,
        total_size=verification.total_size,
        hub_sha256=verification.sha256,
        signature_ok=verification.signature_ok,
    )
    if verification.held != image.total_size or verification.sha256 != sha:
        return (
            fail(
                Outcome.FAILED,
                JobReason.HUB_HASH_MISMATCH,
                f"hub holds {verification.held}/{image.total_size} bytes, hash {verification.sha256}",
                verification.sha256,
            ),
            verification,
            False,
        )
    if not verification.signature_ok:
        ending = fail(Outcome.FAILED, JobReason.HUB_SIGNATURE_REJECTED, "hub's signature check failed")
        return ending, verification, False
    # VERIFY is the hub's word; the proof is evidence: a MAC under a fresh nonce over every byte of the envelope.
    proof = await _with_link_retries(lambda: driver.prove(image, ImageRegion.STAGED), tries, interval)
    store.record_event(job_id, "proof", region="staged", ok=proof.ok, held=proof.held, length=proof.length)
    if proof.ok:
        return None, verification, True
    if round_ == 1:
        ending = fail(
            Outcome.QUARANTINED,
            JobReason.HUB_PROOF_FAILED,
            f"the hub could not prove it holds the {image.total_size}-byte image after an erase and a fresh "
            f"transfer (it holds {proof.held} bytes)",
            verification.sha256,
        )
        return ending, verification, False
    # Flash that lost bytes, or a hub that lied: forget what it holds and send it all again, once.
    await _with_link_retries(driver.erase, tries, interval)
    store.record_event(job_id, "erased", cause="the staged image was not proven")
    return None, verification, False


async def _activation_phase(
    driver: JigDriver,
    image: UpgradeImage,
    target: str,
    ctx: JobContext,
    job_id: int,
    hub_sha: str | None,
    activate: str | None,
) -> _Ending:
    """ACTIVATE (unless `activate` is None: a resumed job whose hub already runs the target), then read back and
    prove the running image, all within the activation phase's deadline."""
    timing = driver.timing()
    bound = _activate_bound(ctx.settings, timing, image.total_size)
    sha, envelope = image.manufacturer_image_sha256, image.upgrade_image_sha256
    try:
        async with asyncio.timeout(bound) as phase:
            if activate is not None:
                ended = await _activate(driver, image, target, ctx, job_id, hub_sha)
                if ended is not None:
                    return ended
            return await _confirm_running(driver, image, target, ctx, job_id, hub_sha)
    except TimeoutError:
        if not phase.expired():
            raise
        await _drop_link(driver)
        detail = f"activation and read-back did not finish within their {_describe(bound, timing)}"
        ctx.store.record_event(job_id, "read_back", running=None, error=detail)
        return _Ending(
            Outcome.QUARANTINED, JobReason.ACTIVATE_DEADLINE_EXCEEDED, detail, None, target, sha, hub_sha, envelope
        )


async def _activate(
    driver: JigDriver, image: UpgradeImage, target: str, ctx: JobContext, job_id: int, hub_sha: str | None
) -> _Ending | None:
    store = ctx.store
    sha, envelope = image.manufacturer_image_sha256, image.upgrade_image_sha256
    try:
        activation = await driver.activate(sha, envelope)
    except LINK_FAILURES as exc:
        # The hub may be rebooting into the new image; what it runs now is the question that decides.
        store.record_event(job_id, "activate", code=None, error=str(exc))
        return None
    store.record_event(job_id, "activate", code=activation.code, running=activation.running_version)
    if activation.status is not ActivationStatus.SUCCESS:
        reason = _ACTIVATION_REASONS[activation.status]
        detail = f"CS06 {activation.code}"
        return _Ending(Outcome.QUARANTINED, reason, detail, None, target, sha, hub_sha, envelope)
    return None


async def _confirm_running(
    driver: JigDriver, image: UpgradeImage, target: str, ctx: JobContext, job_id: int, hub_sha: str | None
) -> _Ending:
    """After activation: the hub must read back the target and prove it runs the envelope."""
    store, settings = ctx.store, ctx.settings
    tries, interval = settings.readback_tries, settings.readback_interval_s
    sha, envelope = image.manufacturer_image_sha256, image.upgrade_image_sha256

    def ending(outcome: Outcome, reason: str, detail: str, running: str | None) -> _Ending:
        return _Ending(outcome, reason, detail, running, target, sha, hub_sha, envelope)

    try:
        version = await _with_link_retries(driver.read_version, tries, interval)
    except LINK_FAILURES as exc:
        store.record_event(job_id, "read_back", running=None, error=str(exc))
        return ending(Outcome.QUARANTINED, JobReason.HUB_UNRESPONSIVE_AFTER_ACTIVATE, str(exc), None)
    store.record_event(job_id, "read_back", running=version.running_version, staged=version.staged_version)
    if version.running_version != target:
        return ending(
            Outcome.QUARANTINED,
            JobReason.VERSION_NOT_TARGET_AFTER_ACTIVATE,
            f"runs {version.running_version}, target {target}",
            version.running_version,
        )
    proof = await _with_link_retries(lambda: driver.prove(image, ImageRegion.RUNNING), tries, interval)
    store.record_event(job_id, "proof", region="running", ok=proof.ok, held=proof.held, length=proof.length)
    if not proof.ok:
        # It says it runs the target but cannot show the bytes: what it runs is unknown, so nothing is claimed.
        return ending(
            Outcome.QUARANTINED,
            JobReason.RUNNING_IMAGE_UNPROVEN,
            f"reports {version.running_version} but could not prove it runs image {envelope[:16]}",
            None,
        )
    return ending(Outcome.REFLASHED, JobReason.REFLASHED, f"runs {target}, proven", version.running_version)
