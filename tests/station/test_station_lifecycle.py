"""Issue 12, part 3: nothing the station starts outlives it. A slot's job never outlives its slot (a cancelled slot
worker takes its job down, and the job records itself as interrupted, before the driver is closed), and a station
that stops leaves no task of its own running."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from firmware_catalog.catalog import load_catalog
from firmware_catalog.keys import load_public_key
from station import job as job_module
from station.bench import Bench
from station.config import JobSettings, Tariff, load_config
from station.daemon import Station
from station.demo import DemoWorld, build_demo_world
from station.job import JobContext
from station.orders import OrderRequest
from station.showcase import write_station_config
from station.store import Store
from tests.station.conftest import ACTOR, hub_id, import_and_scan_in
from tests.station.test_bench_e2e import HUBS, sim_jig


@pytest.fixture
def world(tmp_path: Path) -> DemoWorld:
    return build_demo_world(tmp_path / "world")


async def test_a_cancelled_slot_takes_its_job_down_before_the_driver_closes(
    tmp_path: Path, world: DemoWorld, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_module, "TRANSFER_PROGRESS_EVERY_S", 0.1)
    catalog = load_catalog(world.catalog_dir, load_public_key(world.authority_pub), datetime.now(UTC))
    hub = HUBS[0]
    import_and_scan_in(store, OrderRequest("DCC-L", "dcc", "SUPPLIER-A", "North", [(hub_id(hub.n), 2)], "l.csv",
                                           "0" * 64))  # fmt: skip
    transferring = asyncio.Event()

    def emit(event: str, **fields: object) -> None:
        if event == "transfer_progress":
            transferring.set()

    ctx = JobContext(
        store=store, catalog=lambda: catalog, tariff=Tariff(), station=ACTOR.station, region="North",
        settings=JobSettings(retry_backoff_s=0.05), emit=emit,
    )  # fmt: skip
    jig = sim_jig(world, hub, tmp_path / "hubs", baud=57_600)
    closed_while_job_ran: list[bool] = []
    close = jig.close

    async def watched_close() -> None:
        closed_while_job_ran.append(any(t.get_name() == "job-A1" and not t.done() for t in asyncio.all_tasks()))
        await close()

    jig.close = watched_close  # type: ignore[method-assign]
    bench = Bench({"A1": jig}, ctx)
    running = asyncio.create_task(bench.run())
    await asyncio.wait_for(transferring.wait(), 30)
    running.cancel()  # not bench.stop(): the slot worker itself is cancelled (a TaskGroup shutting down)
    with pytest.raises(asyncio.CancelledError):
        await running
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "job-A1"]
    assert closed_while_job_ran == [False]
    (job,) = store.jobs()
    assert job.state == "interrupted"  # never done, resumed when the hub is seen again


async def test_a_station_that_stops_leaves_no_task_of_its_own(tmp_path: Path, world: DemoWorld) -> None:
    config_path = write_station_config(world, [world.scenario.filler], broker_url=None)
    config = load_config(config_path)
    before = set(asyncio.all_tasks())
    station = Station.open(config, once=True, emit=lambda event, **fields: None, live=False)
    async with station:
        names = {task.get_name() for task in asyncio.all_tasks() - before}
        assert {"status-file"} <= names
        await station.run()
    assert set(asyncio.all_tasks()) - before == set()
    assert (config.resolve(config.station.store).parent / "status.json").exists()
