"""Stations of a simulated fleet: each a real store and a real reporter, talking to its site broker. A bench is
simulated by recording finished jobs through the store, as the bench does when a job ends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware_catalog.hub import format_eui64
from station.audit import AuditEntry
from station.fleet_brokers import Site
from station.messages import hub_result
from station.outcome import Outcome
from station.reporter import Reporter
from station.store import Actor, JobRecord, Store

__all__ = ["FleetStation", "eventually"]

BEFORE = "01000000"


class FleetStation:
    """One station: a store of its own and its reporter, connected to its site broker."""

    def __init__(self, site: Site, station: str, folder: Path, number: int) -> None:
        self.station = station
        self.region = site.stations[station]
        self.number = number
        self.store = Store(folder / f"{station}.db", Actor(station, "op-0042", "SSC-TRIAGE-2026-017"))
        config = site.station_mqtt(station, republish_after_s=1.0, republish_max_s=2.0)
        birth = {"software_version": "test", "facility": "SSC-TRIAGE-2026-017", "operator": "op-0042", "slots": 8}
        self.reporter = Reporter(self.store, config, station=station, region=self.region, birth=birth)
        self.task: asyncio.Task[None] | None = None

    def hub(self, n: int) -> tuple[str, str]:
        """The CHF and GPF IDs of this station's hub n (stations never share a hub)."""
        base = 0x00DB120000000000 | (self.number << 24) | n
        return format_eui64(base), format_eui64(base | 1 << 32)

    def finish(self, hubs: list[tuple[int, Outcome, str]]) -> None:
        """Jobs ended on the bench: (hub number, outcome, firmware_after), in this order."""

        def report(job: JobRecord, entry: AuditEntry, message_id: str) -> dict[str, Any]:
            return hub_result(job, entry.hash, message_id, station=self.station, region=self.region,
                              requesting_party=None)  # fmt: skip

        identity = {"manufacturer": "121D", "model": "0000", "hardware_version": "1200", "firmware_version": BEFORE}
        for n, outcome, after in hubs:
            chf, gpf = self.hub(n)
            job_id = self.store.start_job(chf_id=chf, gpf_id=gpf, order_ref=None, slot="A1", identity=identity).id
            reason = "REFLASHED" if outcome is Outcome.REFLASHED else "TRANSFER_DEADLINE_EXCEEDED"
            self.store.finish_job(
                job_id, outcome=outcome, reason=reason, firmware_after=after, target_version="01020000",
                image_sha256="ab" * 32, hub_sha256="ab" * 32, charge_pence=0, currency="GBP", report=report,
            )  # fmt: skip
        self.reporter.wake.set()

    def start(self) -> None:
        self.task = asyncio.create_task(self.reporter.run(), name=f"reporter-{self.station}")

    async def stop(self) -> None:
        self.reporter.stop()
        if self.task is not None:
            await self.task
        self.store.close()

    def counts(self) -> dict[str, int]:
        return self.store.outbox_counts()


async def eventually(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.1)
