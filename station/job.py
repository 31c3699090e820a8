"""One hub's way through the station: identify, match to an order, decide, flash, verify, activate, read back,
and the one transaction that records the outcome.

A hub counts as REFLASHED only when the version read back after activation is the target and the hub's own hash of
what it holds equals the catalog's. A job that stops without an outcome (the station is stopping, no catalog is in
force) is marked interrupted, never done, and resumes when its hub is seen again: the hub keeps what it holds and
the transfer continues from there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from drivers.errors import LinkError, ProtocolError, TransferRefused
from drivers.frame import ActivationCode
from drivers.jig import JigDriver
from firmware_catalog.catalog import Catalog
from firmware_catalog.hub import HubIdentity
from firmware_catalog.policy import Decision, decide
from firmware_catalog.reason import ReasonCode
from station.audit import AuditEntry
from station.config import JobSettings, Tariff
from station.messages import hub_result
from station.outcome import JobReason, Outcome
from station.slot import SlotView
from station.store import JobRecord, Store

__all__ = ["JobContext", "JobSettings", "run_job"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_CATALOG_CODES = {
    ReasonCode.CATALOG_EXPIRED,
    ReasonCode.CATALOG_SIGNATURE_INVALID,
    ReasonCode.CATALOG_ROLLBACK,
    ReasonCode.CATALOG_MALFORMED,
}
_ACTIVATION_REASONS = {
    ActivationCode.NO_IMAGE_HELD: JobReason.ACTIVATION_NO_IMAGE_HELD,
    ActivationCode.HASH_MISMATCH: JobReason.ACTIVATION_HASH_MISMATCH,
    ActivationCode.ACTIVATION_FAILURE: JobReason.ACTIVATION_FAILURE,
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


@dataclass(frozen=True)
class _Ending:
    outcome: Outcome
    reason: str
    detail: str
    firmware_after: str | None = None
    target: str | None = None
    image_sha256: str | None = None
    hub_sha256: str | None = None


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
        slot.begin("done", message=f"already {done.outcome} in order {order_ref}")
        return None
    slot.begin("deciding", chf_id=chf_id, gpf_id=gpf_id, order_ref=order_ref, firmware=identity.firmware_version)
    job_id = store.start_job(
        chf_id=chf_id, gpf_id=gpf_id, order_ref=order_ref, slot=slot.name, identity=identity.model_dump()
    )
    ctx.emit("job_started", slot=slot.name, chf_id=chf_id, order_ref=order_ref, job_id=job_id)
    try:
        ending = await _process(driver, identity, slot, ctx, job_id, order_ref)
    except asyncio.CancelledError:
        store.suspend_job(job_id, "station stopping")
        slot.begin("held", message="interrupted: station stopping")
        raise
    except _Held as held:
        store.suspend_job(job_id, str(held))
        slot.begin("held", message=str(held))
        ctx.emit("job_held", slot=slot.name, chf_id=chf_id, cause=str(held))
        return None
    except ProtocolError as exc:
        ending = _Ending(Outcome.QUARANTINED, JobReason.PROTOCOL_ERROR, str(exc))
    except (LinkError, OSError) as exc:
        # The link failed outside the transfer's own retries, or the jig went away: no outcome yet.
        store.suspend_job(job_id, f"link failed: {exc}")
        slot.begin("held", message=f"link failed: {exc}")
        raise
    return _record(ctx, job_id, order_ref, slot, ending)


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
        charge_pence=ctx.tariff.pence(ending.outcome.value) if order_ref is not None else 0,
        currency=ctx.tariff.currency,
        report=report,
    )
    slot.finish(record.chf_id, ending.outcome.value, ending.reason)
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
        return _Ending(Outcome.UNEXPECTED, JobReason.NOT_IN_OPEN_ORDER, "no open order names this hub; held")
    current = identity
    flashed: _Ending | None = None
    for _ in range(ctx.settings.max_steps):
        catalog = ctx.catalog()
        if catalog is None:
            raise _Held("no catalog in force")
        decision = decide(current, catalog, ctx.clock())
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
        step = await _flash(driver, decision, slot, ctx, job_id)
        if step.outcome is not Outcome.REFLASHED:
            return step
        flashed = step
        current = current.model_copy(update={"firmware_version": step.firmware_after})
    return flashed or _Ending(Outcome.FAILED, JobReason.PROTOCOL_ERROR, "no step was taken")


async def _with_link_retries(call: Callable[[], Awaitable[_T]], tries: int, interval: float) -> _T:
    for attempt in range(tries):
        try:
            return await call()
        except LinkError:
            if attempt == tries - 1:
                raise
            await asyncio.sleep(interval)
    raise AssertionError("unreachable")


async def _flash(driver: JigDriver, decision: Decision, slot: SlotView, ctx: JobContext, job_id: int) -> _Ending:
    store, settings = ctx.store, ctx.settings
    image, entry = decision.image, decision.entry
    assert image is not None
    assert entry is not None
    target, sha = entry.firmware_version, entry.manufacturer_image_sha256

    def ending(outcome: Outcome, reason: str, detail: str, hub_sha: str | None = None) -> _Ending:
        return _Ending(outcome, reason, detail, None, target, sha, hub_sha)

    store.record_event(job_id, "transfer_started", target=target, image_sha256=sha, size=image.total_size)
    slot.begin("transferring", target=target, bytes_done=0, bytes_total=image.total_size)
    stats = None
    for attempt in range(settings.link_retries + 1):
        number = store.begin_attempt(job_id, f"transfer to {target}")
        try:
            stats = await driver.transfer(image, slot.progress)
        except LinkError as exc:
            store.end_attempt(job_id, number, "link_error", str(exc), 0)
            ctx.emit("link_error", slot=slot.name, attempt=number, error=str(exc))
            if attempt == settings.link_retries:
                return ending(Outcome.FAILED, JobReason.LINK_RETRIES_EXHAUSTED, str(exc))
            await asyncio.sleep(settings.retry_backoff_s * (attempt + 1))
            continue
        except TransferRefused as exc:
            store.end_attempt(job_id, number, "refused", str(exc), 0)
            return ending(Outcome.FAILED, JobReason.TRANSFER_REFUSED_BY_HUB, str(exc))
        store.end_attempt(
            job_id,
            number,
            "ok",
            f"resumed from {stats.resumed_from}, {stats.compression.name}, {stats.retransmitted_frames} resent",
            stats.data_bytes,
        )
        break
    assert stats is not None
    store.record_event(
        job_id,
        "transfer_ended",
        resumed_from=stats.resumed_from,
        data_bytes=stats.data_bytes,
        frames=stats.frames,
        retransmitted_frames=stats.retransmitted_frames,
        compression=stats.compression.name,
        elapsed_s=round(stats.elapsed_s, 3),
    )

    slot.begin("verifying")
    tries, interval = settings.readback_tries, settings.readback_interval_s
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
        return ending(
            Outcome.FAILED,
            JobReason.HUB_HASH_MISMATCH,
            f"hub holds {verification.held}/{image.total_size} bytes, hash {verification.sha256}",
            verification.sha256,
        )
    if not verification.signature_ok:
        return ending(Outcome.FAILED, JobReason.HUB_SIGNATURE_REJECTED, "hub's signature check failed")

    slot.begin("activating")
    try:
        activation = await driver.activate(sha, image.upgrade_image_sha256)
    except LinkError as exc:
        # The hub may be rebooting into the new image; what it runs now is the question that decides.
        store.record_event(job_id, "activate", code=None, error=str(exc))
    else:
        store.record_event(job_id, "activate", code=int(activation.code), running=activation.running_version)
        if activation.code is not ActivationCode.SUCCESS:
            reason = _ACTIVATION_REASONS[activation.code]
            return ending(Outcome.QUARANTINED, reason, f"CS06 {int(activation.code)}", verification.sha256)
    try:
        version = await _with_link_retries(driver.read_version, tries, interval)
    except LinkError as exc:
        store.record_event(job_id, "read_back", running=None, error=str(exc))
        return ending(Outcome.QUARANTINED, JobReason.HUB_UNRESPONSIVE_AFTER_ACTIVATE, str(exc), verification.sha256)
    store.record_event(job_id, "read_back", running=version.running_version, staged=version.staged_version)
    if version.running_version != target:
        return ending(
            Outcome.QUARANTINED,
            JobReason.VERSION_NOT_TARGET_AFTER_ACTIVATE,
            f"runs {version.running_version}, target {target}",
            verification.sha256,
        )
    return _Ending(
        Outcome.REFLASHED, JobReason.REFLASHED, f"runs {target}", version.running_version, target, sha,
        verification.sha256,
    )  # fmt: skip
