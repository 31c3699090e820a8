"""Hubs that hold a slot without failing, through a real link: simulated hubs served on TCP ports
(`simulators/hub_server.py`, each behind an emulated UART), a bench of `tcp` drivers (`drivers/url_jig.py`) in this
process, the real store and signed catalog. Each hostile hub shares the bench with an honest one, which must finish
while the hostile one misbehaves; the hostile one must end with its own reason code within its computed bound.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drivers.jig_driver import JigDriver
from drivers.maintenance_port import LinkTiming
from drivers.url_jig import UrlJig
from firmware_catalog.catalog import Catalog, load_catalog
from firmware_catalog.hub import HubIdentity
from firmware_catalog.image import UpgradeImage, read_image
from firmware_catalog.keys import load_public_key
from simulators.fault import parse_faults
from simulators.hub import HubOptions
from simulators.hub_server import HubServer
from simulators.link import LinkSettings
from simulators.tcp_server import TcpJigServer
from station.bench import Bench
from station.config import JobSettings, Tariff
from station.demo import DemoWorld, build_demo_world
from station.job import JobContext
from station.orders import OrderRequest
from station.store import Store
from tests.station.conftest import ACTOR, hub_id, import_and_scan_in

BEFORE, TARGET = "01000000", "01020000"
BAUD = 921_600
SETTINGS = JobSettings(
    retry_backoff_s=0.05, readback_tries=4, readback_interval_s=0.1, link_retries=2, deadline_slack_s=3.0
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> DemoWorld:
    return build_demo_world(tmp_path_factory.mktemp("hostile-links") / "world")


@pytest.fixture(scope="module")
def catalog(world: DemoWorld) -> Catalog:
    return load_catalog(world.catalog_dir, load_public_key(world.authority_pub), datetime.now(UTC))


def target_image(catalog: Catalog) -> UpgradeImage:
    (entry,) = [e for e in catalog.document.entries if e.firmware_version == TARGET and e.manufacturer == "121D"]
    return read_image(catalog.folder / entry.image)


@dataclass
class Served:
    server: HubServer
    listening: TcpJigServer
    state: Path


async def serve(world: DemoWorld, state: Path, n: int, fault: str = "") -> Served:
    identity = HubIdentity(
        manufacturer="121D", model="0000", hardware_version="1200", firmware_version=BEFORE,
        chf_id=hub_id(n), gpf_id=hub_id(n + 1000),
    )  # fmt: skip
    trusted = {0x121D: [load_public_key(world.key("maker-121D.pub"))]}
    options = HubOptions(identity, state, trusted, parse_faults(fault), reboot_delay_s=0.01)
    server = HubServer(options, LinkSettings(baud=BAUD, latency_to_hub_s=0.001, latency_to_station_s=0.001))
    return Served(server, await server.serve_tcp(), state)


def tcp_driver(served: Served) -> JigDriver:
    return UrlJig.from_config({"url": served.listening.url, "line_baud": BAUD, "reply_timeout_s": 0.3})


@dataclass
class Run:
    store: Store
    started: dict[str, float]
    finished: dict[str, float]


async def run_bench(store: Store, catalog: Catalog, drivers: dict[str, JigDriver], hubs: list[int]) -> Run:
    asked = [(hub_id(n), i + 2) for i, n in enumerate(hubs)]
    import_and_scan_in(store, OrderRequest("DCC-LINKS", "dcc", "SUPPLIER-A", "North", asked, "links.csv", "0" * 64))
    started: dict[str, float] = {}
    finished: dict[str, float] = {}

    def emit(event: str, **fields: object) -> None:
        if event == "job_started":
            started[str(fields["chf_id"])] = time.monotonic()
        elif event == "job_finished":
            finished[str(fields["chf_id"])] = time.monotonic()

    ctx = JobContext(
        store=store, catalog=lambda: catalog, tariff=Tariff(), station=ACTOR.station, region="North",
        settings=SETTINGS, emit=emit,
    )  # fmt: skip
    await Bench(drivers, ctx).run(once=True)
    return Run(store, started, finished)


def transfer_bound(size: int) -> float:
    """docs/station.md, "How long a job may take": factor x nominal transfer + slack + every retry backoff."""
    nominal = LinkTiming(BAUD, 4096, 8).transfer_s(size)
    backoffs = SETTINGS.retry_backoff_s * SETTINGS.link_retries * (SETTINGS.link_retries + 1) / 2
    return SETTINGS.deadline_factor * nominal + SETTINGS.deadline_slack_s + backoffs


def held_bytes(state: Path) -> int:
    slots = [state / "slot-a.bin", state / "slot-b.bin"]
    return max((p.stat().st_size for p in slots if p.exists()), default=0)


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


async def hostile_and_honest(
    tmp_path: Path, world: DemoWorld, catalog: Catalog, store: Store, fault: str, stack: AsyncExitStack
) -> tuple[Run, Served]:
    hostile = await serve(world, tmp_path / "hostile", 1, fault)
    honest = await serve(world, tmp_path / "honest", 2)
    for served in (hostile, honest):
        stack.push_async_callback(served.listening.close)
    drivers = {"A1": tcp_driver(hostile), "A2": tcp_driver(honest)}
    run = await run_bench(store, catalog, drivers, [1, 2])
    jobs = {job.chf_id: job for job in store.jobs()}
    honest_job = jobs[hub_id(2)]
    assert (honest_job.outcome, honest_job.reason, honest_job.firmware_after) == ("REFLASHED", "REFLASHED", TARGET)
    return run, hostile


async def test_a_hub_that_naks_every_frame_ends_on_its_nak_budget(
    tmp_path: Path, world: DemoWorld, catalog: Catalog, store: Store, stack: AsyncExitStack
) -> None:
    # Before: every NAK refilled the window and restarted the timer; the hub held its slot for ever.
    run, hostile = await hostile_and_honest(tmp_path, world, catalog, store, "nak-forever", stack)
    job = next(j for j in store.jobs() if j.chf_id == hub_id(1))
    assert (job.state, job.outcome, job.reason) == ("final", "FAILED", "HUB_REJECTS_DATA")
    assert job.firmware_after == BEFORE  # read at the end: nothing was activated
    took = run.finished[hub_id(1)] - run.started[hub_id(1)]
    assert took < transfer_bound(target_image(catalog).total_size)
    assert held_bytes(hostile.state) == 0
    # One attempt: a hub that heard every frame and refused it is not cured by another session.
    (attempt,) = store.job_ledger.attempts(job.id)
    assert attempt.result == "rejected"
    assert "BAD_DATA" in (attempt.detail or "")


async def test_a_hub_that_trickles_ends_at_its_transfer_deadline_and_keeps_what_it_holds(
    tmp_path: Path, world: DemoWorld, catalog: Catalog, store: Store, stack: AsyncExitStack
) -> None:
    # 16 bytes per 0.15 s is steady progress: no stall ever, so only the deadline can end it (before: hours).
    run, hostile = await hostile_and_honest(tmp_path, world, catalog, store, "trickle=16", stack)
    job = next(j for j in store.jobs() if j.chf_id == hub_id(1))
    assert (job.state, job.outcome, job.reason) == ("final", "FAILED", "TRANSFER_DEADLINE_EXCEEDED")
    bound = transfer_bound(target_image(catalog).total_size)
    took = run.finished[hub_id(1)] - run.started[hub_id(1)]
    assert bound <= took < bound + 5  # the deadline, plus deciding and the read at the end
    # The honest neighbour finished while the trickling hub still held its slot.
    assert run.finished[hub_id(2)] < run.finished[hub_id(1)]
    # What the hub acknowledged is kept for the next visit: it resumes from there (after proving it).
    held = held_bytes(hostile.state)
    assert 16 * 10 <= held < target_image(catalog).total_size
    assert held % 16 == 0
    (attempt,) = store.job_ledger.attempts(job.id)
    assert attempt.result == "deadline"
    said = re.search(r"acknowledged (\d+) of", attempt.detail or "")
    assert said is not None, attempt.detail
    # The station says what it read acknowledged; the hub may hold one trickle more, whose ack was on the wire when
    # the deadline cut the link (a loaded machine showed 400 said, 416 held). The next visit resumes from the hub's
    # own account, so the difference costs nothing.
    assert 0 <= held - int(said.group(1)) <= 16
    assert job.firmware_after == BEFORE
