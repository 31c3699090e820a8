"""The bench: one worker per slot under one TaskGroup, each waiting for a hub, processing it, and waiting for the
next. Stopping drains: in-flight transfers stop at a frame boundary and their jobs are recorded as interrupted.

A slot finds its hub by asking the jig to identify what is on it: no answer means an empty slot. After a hub has
an outcome the slot waits for a different hub (or for the same one to be taken off and put back: it then shows
that the hub is already done).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from drivers.errors import LinkError, MaintenancePortError
from drivers.jig_driver import JigDriver
from firmware_catalog.hub import HubIdentity
from station.event_log import Event
from station.job import JobContext, NotScannedIn, run_job
from station.live_state import LiveState, StationSnapshot, Totals
from station.slot import SlotCounters, SlotFault, SlotView
from station.store import JobRecord

__all__ = ["Bench", "BenchSettings"]

log = logging.getLogger(__name__)

# The window hubs per hour is counted over: long enough to smooth one slow hub, short enough to show a bench slowing.
RATE_WINDOW_S = 600.0
_T = TypeVar("_T")
# The longest wait before a hub that keeps failing on a slot is tried again.
_MAX_BACKOFF_S = 30.0


class _Stopped(Exception):
    """The bench is stopping: the slot worker ends."""


class _AwaitingScanIn(Exception):
    """The hub on the slot waits for its scan-in; the slot looks again every poll."""


class _SlotFaulted(Exception):
    """The hub on the slot could not be processed now; the slot's view says why."""

    def __init__(self, code: SlotFault) -> None:
        self.code = code
        super().__init__(code.value)


def _same_hub(a: HubIdentity, b: HubIdentity) -> bool:
    return all(getattr(a, f) == getattr(b, f) for f in ("chf_id", "gpf_id", "manufacturer", "model", "serial"))


@dataclass(frozen=True)
class BenchSettings:
    poll_interval_s: float = 1.0
    status_interval_s: float = 0.5


class Bench:
    """Slots and their drivers. `run(once=True)` processes what is on the bench now and returns."""

    def __init__(
        self,
        drivers: dict[str, JigDriver],
        ctx: JobContext,
        settings: BenchSettings | None = None,
        on_result: Callable[[], None] | None = None,
        extra_status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.drivers = drivers
        # More for the status file (the reporter's link and the outbox, docs/station.md), and whether the station
        # has stopped, so that a one-shot command does not take a fresh file for a running daemon.
        self.extra_status = extra_status
        self.finished = False
        self.ctx = ctx
        self.settings = settings or BenchSettings()
        self.on_result = on_result or (lambda: None)
        # Every slot change is published: the status file, the live table, telemetry and the bench page subscribe.
        self.live = LiveState(self.snapshot)
        self.views = {name: SlotView(name, on_change=self.live.changed) for name in drivers}
        self.started = time.monotonic()
        # When each hub of the recent window finished, for hubs per hour (the rate now, not the average since start).
        self._finished_at: deque[float] = deque()
        self.outcomes: dict[str, int] = {}
        self._stopping = asyncio.Event()
        self._last_fault: dict[str, tuple[SlotFault, str]] = {}
        # The hub each slot holds for its scan-in, so that it is said (and audited) once per visit, not every poll.
        self._awaiting: dict[str, str] = {}

    def stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self, once: bool = False) -> None:
        """Every slot's worker, until stopped (or, with `once`, until each has done what is on it); the drivers are
        closed when they end."""
        try:
            async with asyncio.TaskGroup() as group:
                for name, driver in self.drivers.items():
                    group.create_task(self._supervised_slot(name, driver, once), name=f"slot-{name}")
        finally:
            self.live.changed()
            for driver in self.drivers.values():
                with contextlib.suppress(Exception):
                    await driver.close()

    async def _pause(self, seconds: float | None = None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.poll_interval_s if seconds is None else seconds):
                await self._stopping.wait()

    async def _until_stopped(self, call: Awaitable[_T]) -> _T:
        """Await `call` unless the bench is told to stop first (then it is cancelled and _Stopped raised), so that a
        jig that does not answer never holds up a stop."""
        work = asyncio.ensure_future(call)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
            raise _Stopped
        return work.result()

    def _fault(self, name: str, fault: SlotFault, message: str) -> None:
        """The slot cannot go on with what is on it: the view says why (with its code), and the event is emitted
        when the slot's fault changes, not on every retry."""
        view = self.views[name]
        view.fail(fault, message)
        if self._last_fault.get(name) != (fault, message):
            self._last_fault[name] = (fault, message)
            self.ctx.emit(Event.SLOT_ERROR, slot=name, code=fault.value, error=message)

    async def _supervised_slot(self, name: str, driver: JigDriver, once: bool) -> None:
        """The slot worker, kept alive: a fault in it costs this slot a pause, never the bench."""
        while not self.stopping:
            try:
                await self._slot(name, driver, once)
                return
            except Exception as exc:
                log.exception("slot %s: the slot worker failed; restarting it", name)
                self._fault(name, SlotFault.INTERNAL_ERROR, f"internal error: {exc!r}")
                if once:
                    return
                await self._pause(_MAX_BACKOFF_S)

    async def _slot(self, name: str, driver: JigDriver, once: bool) -> None:
        view = self.views[name]
        last_done: str | None = None
        # After a fault with the same hub on the slot, wait longer each time before trying it again (so a hub that
        # keeps failing cannot fill the audit trail), until another hub is on the slot or it is empty.
        failed: tuple[HubIdentity, float] | None = None
        while not self.stopping:
            view.look()
            try:
                identity = await self._until_stopped(driver.identify())
            except _Stopped:
                return
            except LinkError:
                view.clear()
                self._last_fault.pop(name, None)
                self._awaiting.pop(name, None)
                last_done, failed = None, None
                if once:
                    return
                await self._pause()
                continue
            except (OSError, LookupError) as exc:
                # The jig itself is not reachable (unplugged, port missing, controller down): keep asking.
                self._fault(name, SlotFault.JIG_UNREACHABLE, f"jig not reachable: {exc}")
                if once:
                    return
                await self._pause()
                continue
            except (MaintenancePortError, ValueError) as exc:
                # A hub that answers nonsense (bad frames, an identity that does not validate) is not processed.
                self._fault(name, SlotFault.PROTOCOL_ERROR, f"identify: {exc}")
                if once:
                    return
                await self._pause()
                continue
            if identity.chf_id is not None and identity.chf_id == last_done:
                if once:
                    return
                await self._pause()
                continue
            if failed is not None and _same_hub(failed[0], identity):
                delay = failed[1]
                await self._pause(delay)
                if self.stopping:
                    return
            else:
                delay = 0.0
            try:
                record = await self._job(name, driver, identity)
            except _Stopped:
                return
            except _AwaitingScanIn:
                if once:
                    return
                await self._pause()
                continue
            except _SlotFaulted as fault:
                if once:
                    return
                if fault.code is SlotFault.STORE_UNAVAILABLE:
                    # The store logs its own state changes; retry at the poll interval so the slot catches up as
                    # soon as it can write again.
                    await self._pause()
                else:
                    failed = (identity, min(max(2 * delay, self.settings.poll_interval_s), _MAX_BACKOFF_S))
                continue
            failed = None
            self._last_fault.pop(name, None)
            self._awaiting.pop(name, None)
            if record is not None:
                self.outcomes[record.outcome or "?"] = self.outcomes.get(record.outcome or "?", 0) + 1
                self._finished_at.append(time.monotonic())
                self.live.changed()
                self.on_result()
            # Even with `once`, look again: the hub on the slot now may not be the one just processed (it was
            # swapped mid-job), and it is on the bench now. The same hub again ends the slot's work.
            last_done = identity.chf_id

    async def _job(self, name: str, driver: JigDriver, identity: HubIdentity) -> JobRecord | None:
        """One job for the hub on the slot. Raises _Stopped when the bench stops, _SlotFaulted (after showing the
        fault on the slot) when the job could not go on: its record stays unfinished and it resumes when the hub is
        next seen."""
        view = self.views[name]
        if identity.chf_id is None or identity.gpf_id is None:
            # Without its device IDs a hub cannot be matched to an order nor recorded; nothing is started for it.
            self._fault(name, SlotFault.NO_DEVICE_ID, "the hub did not report its CHF and GPF device IDs")
            raise _SlotFaulted(SlotFault.NO_DEVICE_ID)
        job = asyncio.create_task(run_job(driver, identity, view, self.ctx), name=f"job-{name}")
        stop = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({job, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not job.done():
                # The bench is stopping, or this slot's worker itself was cancelled: the job never outlives its
                # slot (it would go on with a driver that is about to be closed). It records itself as interrupted.
                job.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.wait({job})
        try:
            return await job
        except asyncio.CancelledError:
            if self.stopping:
                raise _Stopped from None
            raise
        except NotScannedIn as exc:
            view.hold(exc.chf_id, identity.gpf_id, exc.order_ref, str(exc))
            if self._awaiting.get(name) != exc.chf_id:
                self._awaiting[name] = exc.chf_id
                self.ctx.emit(Event.HUB_NOT_SCANNED_IN, slot=name, chf_id=exc.chf_id, order_ref=exc.order_ref)
                try:
                    self.ctx.store.audit("hub_not_scanned_in", slot=name, chf_id=exc.chf_id, order_ref=exc.order_ref)
                except self.ctx.store.write_errors as failed:
                    self._awaiting.pop(name, None)  # said again, and recorded, when the store can write
                    self._fault(name, SlotFault.STORE_UNAVAILABLE, f"store unavailable: {failed}")
                    raise _SlotFaulted(SlotFault.STORE_UNAVAILABLE) from None
            raise _AwaitingScanIn from None
        except self.ctx.store.write_errors as exc:
            # The disk is full or read-only: the store has said so once (station/store.py); the job's outcome is
            # not written, so it stays unfinished and resumes when the hub is next seen.
            self._fault(name, SlotFault.STORE_UNAVAILABLE, f"store unavailable: {exc}")
            raise _SlotFaulted(SlotFault.STORE_UNAVAILABLE) from None
        except (LinkError, OSError) as exc:
            # A link that fails outside a transfer (verify, read back) or a jig that goes away: the job stays
            # unfinished and resumes when the hub is seen again.
            self._fault(name, SlotFault.LINK_FAILED, f"link failed: {exc}")
            raise _SlotFaulted(SlotFault.LINK_FAILED) from None
        except MaintenancePortError as exc:
            self._fault(name, SlotFault.PROTOCOL_ERROR, str(exc))
            raise _SlotFaulted(SlotFault.PROTOCOL_ERROR) from None
        except Exception as exc:
            # A fault in our own code must not take the other slots down; the job stays unfinished and is
            # resumed when the hub is seen again.
            log.exception("slot %s: job failed unexpectedly", name)
            self._fault(name, SlotFault.INTERNAL_ERROR, f"internal error: {exc!r}")
            raise _SlotFaulted(SlotFault.INTERNAL_ERROR) from None

    def hubs_per_hour(self, now: float | None = None) -> int:
        """Hubs finished over the last `RATE_WINDOW_S` (or since the start, if sooner), per hour, as a whole number.
        A span under a minute counts as a minute, so that the first hub of the day does not read as thousands."""
        now = time.monotonic() if now is None else now
        while self._finished_at and self._finished_at[0] < now - RATE_WINDOW_S:
            self._finished_at.popleft()
        span = max(60.0, min(RATE_WINDOW_S, now - self.started))
        return round(len(self._finished_at) * 3600 / span)

    def snapshot(self) -> StationSnapshot:
        """The whole bench now (LiveState builds it for each subscriber that wakes)."""
        elapsed = time.monotonic() - self.started
        extra: dict[str, Any] = {}
        if self.extra_status is not None:
            try:
                extra = self.extra_status()
            except Exception as exc:  # a store that cannot be read must not stop the status file
                extra = {"reporting_error": str(exc)}
        slots = [view.snapshot() for view in self.views.values()]
        return StationSnapshot(
            station=self.ctx.station,
            stopped=self.finished,
            updated_at=time.time(),
            slots=slots,
            totals=Totals(
                hubs=sum(self.outcomes.values()),
                outcomes=dict(sorted(self.outcomes.items())),
                hubs_per_hour=self.hubs_per_hour(),
                bytes_per_s=round(sum(slot.bytes_per_s for slot in slots), 1),
                uptime_s=round(elapsed, 1),
            ),
            **extra,
        )

    def counters(self) -> dict[str, SlotCounters]:
        """What each slot has done since the station started (bytes acknowledged, link errors), for the metrics."""
        return {name: view.counters() for name, view in self.views.items()}

    def describe(self) -> dict[str, Any]:
        """The snapshot as JSON data (status.json's content)."""
        return self.snapshot().model_dump(mode="json")
