"""The bench: one worker per slot under one TaskGroup, each waiting for a hub, processing it, and waiting for the
next. Stopping drains: in-flight transfers stop at a frame boundary and their jobs are recorded as interrupted.

A slot finds its hub by asking the jig to identify what is on it: no answer means an empty slot. After a hub has
an outcome the slot waits for a different hub (or for the same one to be taken off and put back: it then shows
that the hub is already done).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.errors import LinkError, ProtocolError
from drivers.jig import JigDriver
from station.atomic_file import write_atomically
from station.job import JobContext, run_job
from station.slot import SlotView

__all__ = ["Bench", "BenchSettings"]

log = logging.getLogger(__name__)


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
        status_file: Path | None = None,
        on_result: Callable[[], None] | None = None,
    ) -> None:
        self.drivers = drivers
        self.ctx = ctx
        self.settings = settings or BenchSettings()
        self.status_file = status_file
        self.on_result = on_result or (lambda: None)
        self.views = {name: SlotView(name) for name in drivers}
        self.started = time.monotonic()
        self.outcomes: dict[str, int] = {}
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self, once: bool = False) -> None:
        status = asyncio.create_task(self._write_status(), name="bench-status") if self.status_file else None
        try:
            async with asyncio.TaskGroup() as group:
                for name, driver in self.drivers.items():
                    group.create_task(self._slot(name, driver, once), name=f"slot-{name}")
        finally:
            if status is not None:
                status.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await status
            self._dump_status()
            for driver in self.drivers.values():
                with contextlib.suppress(Exception):
                    await driver.close()

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.poll_interval_s):
                await self._stopping.wait()

    async def _slot(self, name: str, driver: JigDriver, once: bool) -> None:
        view = self.views[name]
        last_done: str | None = None
        while not self.stopping:
            view.state = "identifying" if view.state in ("empty", "identifying") else view.state
            try:
                identity = await driver.identify()
            except LinkError:
                view.clear()
                last_done = None
                if once:
                    return
                await self._pause()
                continue
            except (OSError, LookupError) as exc:
                # The jig itself is not reachable (unplugged, port missing, controller down): keep asking.
                view.begin("error", message=f"jig not reachable: {exc}")
                if once:
                    self.ctx.emit("slot_error", slot=name, error=str(exc))
                    return
                await self._pause()
                continue
            except (ProtocolError, ValueError) as exc:
                # A hub that answers nonsense (bad frames, an identity that does not validate) is not processed.
                view.begin("error", message=f"identify: {exc}")
                self.ctx.emit("slot_error", slot=name, error=str(exc))
                if once:
                    return
                await self._pause()
                continue
            if identity.chf_id is not None and identity.chf_id == last_done:
                if once:
                    return
                await self._pause()
                continue
            job = asyncio.create_task(run_job(driver, identity, view, self.ctx), name=f"job-{name}")
            stop = asyncio.create_task(self._stopping.wait())
            await asyncio.wait({job, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not job.done():
                job.cancel()  # the job records itself as interrupted
            try:
                record = await job
            except asyncio.CancelledError:
                return
            except (LinkError, ProtocolError, OSError) as exc:
                # A link that fails outside a transfer (verify, read back) or a jig that goes away: the job stays
                # unfinished and resumes when the hub is seen again.
                view.begin("error", message=str(exc))
                self.ctx.emit("slot_error", slot=name, error=str(exc))
                await self._pause()
                continue
            except Exception as exc:
                # A fault in our own code must not take the other slots down; the job stays unfinished and is
                # resumed when the hub is seen again.
                log.exception("slot %s: job failed unexpectedly", name)
                view.begin("error", message=f"internal error: {exc}")
                self.ctx.emit("slot_error", slot=name, error=f"internal error: {exc!r}")
                if once:
                    return
                await self._pause()
                continue
            if record is not None:
                self.outcomes[record.outcome or "?"] = self.outcomes.get(record.outcome or "?", 0) + 1
                self.on_result()
            # Even with `once`, look again: the hub on the slot now may not be the one just processed (it was
            # swapped mid-job), and it is on the bench now. The same hub again ends the slot's work.
            last_done = identity.chf_id

    def progress(self) -> list[dict[str, Any]]:
        """Slot progress for telemetry: the slots that have a hub on them."""
        return [
            {
                "slot": view.name,
                "state": view.state,
                "chf_id": view.chf_id,
                "bytes_done": view.bytes_done,
                "bytes_total": view.bytes_total,
                "bytes_per_s": round(view.bytes_per_s, 1),
            }
            for view in self.views.values()
            if view.chf_id is not None
        ]

    def describe(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        done = sum(self.outcomes.values())
        return {
            "station": self.ctx.station,
            "updated_at": time.time(),
            "slots": [view.describe() for view in self.views.values()],
            "totals": {
                "hubs": done,
                "outcomes": dict(sorted(self.outcomes.items())),
                "hubs_per_hour": round(done / elapsed * 3600, 1) if elapsed > 0 else 0.0,
                "bytes_per_s": round(sum(v.bytes_per_s for v in self.views.values()), 1),
                "uptime_s": round(elapsed, 1),
            },
        }

    def _dump_status(self) -> None:
        if self.status_file is not None:
            self.status_file.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.status_file, json.dumps(self.describe(), indent=1), durable=False)

    async def _write_status(self) -> None:
        while True:
            self._dump_status()
            await asyncio.sleep(self.settings.status_interval_s)
