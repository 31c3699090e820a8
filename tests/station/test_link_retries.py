"""Retries follow the configured counts for every kind of link failure: a connection refused when the driver opens
its transport again mid-job (OSError from the opener) counts against `link_retries` exactly as a closed or silent
link does, in the transfer and in every request before activation.

Before: the transfer retried only `LinkError`, so a refused connection escaped the job's retries (one retry, by the
bench, instead of `link_retries`).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drivers.jig import OpenedLink
from drivers.jig_driver import Progress, TransferStats
from drivers.maintenance_port import SessionSettings
from firmware_catalog.catalog import Catalog, load_catalog
from firmware_catalog.hub import HubIdentity
from firmware_catalog.image import UpgradeImage, read_image
from firmware_catalog.keys import load_public_key
from simulators.hub import HubOptions
from simulators.jig import SimJig
from simulators.link import LinkSettings
from station.bench import Bench
from station.config import JobSettings, Tariff
from station.demo import DemoWorld, build_demo_world
from station.job import JobContext
from station.orders import OrderRequest
from station.outcome import JobReason, Outcome
from station.store import Store
from tests.flashing import flash_once
from tests.station.conftest import ACTOR, hub_id, import_and_scan_in

TARGET = "01020000"
LINK_RETRIES = 3


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> DemoWorld:
    return build_demo_world(tmp_path_factory.mktemp("retries") / "world")


@pytest.fixture(scope="module")
def catalog(world: DemoWorld) -> Catalog:
    return load_catalog(world.catalog_dir, load_public_key(world.authority_pub), datetime.now(UTC))


class RefusingJig(SimJig):
    """Drops the link as the transfer starts; the next `refusals` opens are refused (the jig controller is down)."""

    refusals = 0
    opens = 0
    refused = 0
    _dropped = False

    async def _open(self) -> OpenedLink:
        self.opens += 1
        if self._dropped and self.refused < self.refusals:
            self.refused += 1
            raise ConnectionRefusedError(111, "Connection refused")
        return await super()._open()

    async def transfer(self, image: UpgradeImage, progress: Progress | None = None) -> TransferStats:
        if not self._dropped:
            self._dropped = True
            await self.close()
        return await super().transfer(image, progress)


def refusing_jig(world: DemoWorld, state: Path, refusals: int) -> RefusingJig:
    identity = HubIdentity(
        manufacturer="121D", model="0000", hardware_version="1200", firmware_version="01000000",
        chf_id=hub_id(1), gpf_id=hub_id(1001),
    )  # fmt: skip
    trusted = {0x121D: [load_public_key(world.key("maker-121D.pub"))]}
    options = HubOptions(identity, state, trusted, reboot_delay_s=0.01)
    jig = RefusingJig(options, LinkSettings(baud=3_000_000), SessionSettings(reply_timeout_s=0.3))
    jig.refusals = refusals
    return jig


def run_bench(store: Store, catalog: Catalog, jig: RefusingJig) -> None:
    import_and_scan_in(store, OrderRequest("DCC-R", "dcc", "SUPPLIER-A", "North", [(hub_id(1), 2)], "r.csv", "0" * 64))
    ctx = JobContext(
        store=store, catalog=lambda: catalog, tariff=Tariff(), station=ACTOR.station, region="North",
        settings=JobSettings(retry_backoff_s=0.01, readback_tries=2, readback_interval_s=0.05,
                             link_retries=LINK_RETRIES),
        emit=lambda event, **fields: None,
    )  # fmt: skip
    asyncio.run(Bench({"A1": jig}, ctx).run(once=True))


def test_refused_connections_up_to_link_retries_are_retried_and_the_job_finishes(
    tmp_path: Path, world: DemoWorld, catalog: Catalog, store: Store
) -> None:
    jig = refusing_jig(world, tmp_path / "hub", refusals=LINK_RETRIES)
    run_bench(store, catalog, jig)
    (job,) = store.jobs()
    assert (job.outcome, job.reason, job.firmware_after) == ("REFLASHED", "REFLASHED", TARGET)
    attempts = store.job_ledger.attempts(job.id)
    assert [a.result for a in attempts] == ["link_error"] * LINK_RETRIES + ["ok"]
    assert all("refused" in (a.detail or "") for a in attempts[:LINK_RETRIES])


def test_one_refusal_more_than_link_retries_fails_the_job_with_link_retries_exhausted(
    tmp_path: Path, world: DemoWorld, catalog: Catalog, store: Store
) -> None:
    jig = refusing_jig(world, tmp_path / "hub", refusals=LINK_RETRIES + 1)
    run_bench(store, catalog, jig)
    (job,) = store.jobs()
    assert (job.state, job.outcome, job.reason) == ("final", "FAILED", "LINK_RETRIES_EXHAUSTED")
    attempts = store.job_ledger.attempts(job.id)
    assert [a.result for a in attempts] == ["link_error"] * (LINK_RETRIES + 1)
    assert jig.refused == LINK_RETRIES + 1


async def test_flash_retries_a_refused_open_like_any_link_failure(tmp_path: Path, world: DemoWorld) -> None:
    catalog = load_catalog(world.catalog_dir, load_public_key(world.authority_pub), datetime.now(UTC))
    (entry,) = [e for e in catalog.document.entries if e.firmware_version == TARGET and e.manufacturer == "121D"]
    image = read_image(catalog.folder / entry.image)
    jig = refusing_jig(world, tmp_path / "hub", refusals=2)
    try:
        ending, observer = await flash_once(jig, image, link_retries=2)
    finally:
        await jig.close()
    assert (ending.outcome, ending.firmware_after) == (Outcome.REFLASHED, TARGET)
    assert [a["result"] for a in observer.of("attempt")] == ["link_error", "link_error", "ok"]
    assert jig.refused == 2
    jig = refusing_jig(world, tmp_path / "hub-2", refusals=3)
    try:
        ending, observer = await flash_once(jig, image, link_retries=2)
    finally:
        await jig.close()
    assert (ending.outcome, ending.reason) == (Outcome.FAILED, JobReason.LINK_RETRIES_EXHAUSTED)
    assert "Connection refused" in ending.detail
    assert [a["result"] for a in observer.of("attempt")] == ["link_error"] * 3
    assert jig.refused == 3
