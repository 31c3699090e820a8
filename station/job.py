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

The flash itself (transfer, verify, prove, activate, read back, prove; every phase within its deadline) is
station/flash.py, the one sequence `reflash jig flash` runs too; the job watches it through `_JobObserver`, which
records each step in the store and shows it on the slot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from drivers.errors import HubSwapped, LinkError, ProtocolError
from drivers.jig_driver import JigDriver
from firmware_catalog.catalog import Catalog
from firmware_catalog.errors import CatalogError
from firmware_catalog.hub import HubIdentity
from firmware_catalog.image import UpgradeImage, parse_image
from firmware_catalog.policy import Decision, decide
from firmware_catalog.reason import PolicyEnd, ReasonCode, policy_end
from station import crash_point
from station.audit import AuditEntry
from station.config import JobSettings, Tariff
from station.event_log import Emit, Event
from station.flash import Ending, FlashPhase, confirm_running, flash_image
from station.messages import hub_result
from station.outcome import Interruption, JobReason, Outcome
from station.slot import SlotState, SlotView
from station.store import FlashStep, JobRecord, Store

__all__ = ["JobContext", "JobSettings", "NotScannedIn", "run_job"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")
# How often a transfer in progress is said in the logs (`transfer_progress`): a long one is seen moving.
TRANSFER_PROGRESS_EVERY_S = 5.0


@dataclass
class JobContext:
    store: Store
    catalog: Callable[[], Catalog | None]
    tariff: Tariff
    station: str
    region: str
    settings: JobSettings
    emit: Emit
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    # `[station] require_scan_in`: a hub an order names is flashed only once it was scanned in to that order.
    require_scan_in: bool = True


# How a job ends: the same value whether the flash or the policy ended it (station/flash.py).
_Ending = Ending

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
    started = store.start_job(
        chf_id=chf_id, gpf_id=gpf_id, order_ref=order_ref, slot=slot.name, identity=identity.model_dump()
    )
    job_id = started.id
    ctx.emit(Event.JOB_RESUMED if started.resumed else Event.JOB_STARTED, slot=slot.name, chf_id=chf_id,
             order_ref=order_ref, job_id=job_id)  # fmt: skip
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
        ctx.emit(Event.JOB_HELD, slot=slot.name, chf_id=chf_id, cause=str(held))
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
        ctx.emit(Event.HUB_SWAPPED, slot=slot.name, chf_id=chf_id, found=swap.found.chf_id, job_id=job_id)
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
    party = store.order(order_ref).requesting_party if order_ref is not None else None

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
        Event.JOB_FINISHED,
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
        ctx.emit(
            Event.DECISION, slot=slot.name, chf_id=current.chf_id, code=decision.code.value, message=decision.message
        )
        end = policy_end(decision.code)  # how a refusal ends is data beside its rule (firmware_catalog/reason.py)
        if end is PolicyEnd.HELD:
            raise _Held(f"catalog: {decision.code.value}")
        if end is PolicyEnd.ALREADY_CURRENT or (flashed is not None and end is not PolicyEnd.FLASHED):
            # After a flash, the next step being refused still leaves the hub on approved firmware it reached.
            return flashed or _Ending(
                Outcome.ALREADY_CURRENT, ReasonCode.ALREADY_CURRENT, decision.message, current.firmware_version
            )
        if end is not PolicyEnd.FLASHED:
            return _Ending(Outcome(end.value), decision.code, decision.message, current.firmware_version)
        step_ending = await _flash(driver, decision, slot, ctx, job_id)
        if step_ending.outcome is not Outcome.REFLASHED:
            return step_ending
        flashed = step_ending
        current = current.model_copy(update={"firmware_version": step_ending.firmware_after})
    return flashed or _Ending(Outcome.FAILED, JobReason.PROTOCOL_ERROR, "no step was taken")


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
    return await confirm_running(driver, image, ctx.settings, _JobObserver(ctx, job_id, slot))


async def _flash(driver: JigDriver, decision: Decision, slot: SlotView, ctx: JobContext, job_id: int) -> _Ending:
    assert decision.image is not None
    return await flash_image(driver, decision.image, ctx.settings, _JobObserver(ctx, job_id, slot))


class _JobObserver:
    """The station's view of a flash (station/flash.py): every step recorded in the store (attempts, audit events,
    the flash step before the first byte), the slot's view kept current, long transfers said in the logs, and the
    crash points the crash tests stop at."""

    def __init__(self, ctx: JobContext, job_id: int, slot: SlotView) -> None:
        self.ctx, self.job_id, self.slot = ctx, job_id, slot
        self._said_at = time.monotonic()

    def flashing(self, target: str, image_sha256: str, upgrade_image_sha256: str, size: int) -> None:
        self.ctx.store.begin_step(self.job_id, FlashStep(target, image_sha256, upgrade_image_sha256), size=size)

    def phase(self, phase: FlashPhase, target: str, size: int) -> None:
        if phase is FlashPhase.TRANSFERRING:
            self.slot.transferring(target, size)
            return
        self.slot.enter(SlotState(phase.value), target=target)
        if phase is FlashPhase.ACTIVATING:
            crash_point.reached("activating")

    def progress(self, done: int, total: int) -> None:
        slot = self.slot
        slot.progress(done, total)
        if done >= total // 2:
            crash_point.reached("transfer_half")
        # A long transfer is said every few seconds in the logs (the live table shows every step); a short one never.
        if (now := time.monotonic()) - self._said_at >= TRANSFER_PROGRESS_EVERY_S and done < total:
            self._said_at = now
            eta = slot.eta_s
            self.ctx.emit(Event.TRANSFER_PROGRESS, slot=slot.name, chf_id=slot.chf_id, bytes_done=done,
                          bytes_total=total, percent=100 * done // total if total else 0,
                          bytes_per_s=round(slot.bytes_per_s), eta_s=None if eta is None else round(eta))  # fmt: skip

    def attempt_started(self, what: str) -> int:
        return self.ctx.store.begin_attempt(self.job_id, what)

    def attempt_ended(self, number: int, result: str, detail: str, data_bytes: int) -> None:
        self.ctx.store.end_attempt(self.job_id, number, result, detail, data_bytes)
        if result == "link_error":
            self.slot.link_error()
            self.ctx.emit(Event.LINK_ERROR, slot=self.slot.name, attempt=number, error=detail)

    def event(self, kind: str, **data: Any) -> None:
        self.ctx.store.record_event(self.job_id, kind, **data)
