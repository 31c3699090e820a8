"""`reflash fleet status` over a real Mosquitto: a real station that ran (`reflash run --once`, now offline) and a
station still online (its reporter running as the daemon runs it) with an older catalog, as their retained status
and heartbeat messages tell; and the anchor of the run's stop at the DSP bridge."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from firmware_catalog.catalog import CatalogPin
from station.cli import main
from station.config import MqttConfig, load_config
from station.demo import build_demo_world, device_id
from station.fleet import FleetView, client_settings, collect, fleet_view
from station.messages import StationHeartbeat, StationStatus
from station.mosquitto import Mosquitto, free_port
from station.reporter import Reporter
from station.showcase import STATION
from station.store import Actor, Store
from tests.station.test_reporting import eventually
from tests.station.test_slot_faults import HONEST, Bench, import_order


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    b = Bench(build_demo_world(tmp_path / "world"))
    yield b
    b.close()


def anchors_at_bridge(smi: Path, station: str) -> list[int]:
    db = sqlite3.connect(f"file:{smi}?mode=ro", uri=True)
    try:
        return [row[0] for row in db.execute("SELECT seq FROM anchors WHERE station = ? ORDER BY seq", (station,))]
    finally:
        db.close()


def start_bridge(broker: Mosquitto, smi: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "from station.cli import main; main()", "sim", "dsp-bridge", "--broker", broker.url,
         "--db", str(smi)],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def run_once(bench: Bench, broker: Mosquitto) -> tuple[list[int], CatalogPin]:
    """`reflash run --once` over one honest hub; the checkpoints it signed and the catalog it ran."""
    bench.hub("H", 1, HONEST)
    config = bench.config(broker_url=broker.url)
    import_order(config, [device_id(1, 1)])
    assert bench.station(config, "--once").wait(90) == 0
    store = load_config(config).open_store()
    signed = [checkpoint.seq for checkpoint in store.audit_checkpoints()]
    serial = store.catalog_pin()
    store.close()
    assert serial is not None
    return signed, serial


async def test_fleet_status_shows_every_station_and_flags_an_older_catalog(
    bench: Bench, tmp_path: Path, private_mosquitto: Mosquitto
) -> None:
    broker = private_mosquitto
    smi = tmp_path / "smi.db"
    bridge = start_bridge(broker, smi)
    try:
        # Station one: a real run of one hub, which ends (offline), leaving its heartbeat retained.
        signed, serial = run_once(bench, broker)
        # The checkpoint the stop signed went out before `offline`: the bridge holds it.
        await eventually(lambda: smi.exists() and signed[-1] in anchors_at_bridge(smi, STATION), what="stop anchor")

        # Station two: online, with an older catalog than station one's, reporting as the daemon does.
        other_store = Store(tmp_path / "other.db", Actor("st-south-09", "op", "F"))
        other = Reporter(other_store, MqttConfig(url=broker.url), station="st-south-09", region="South",
                         birth={"software_version": "test", "facility": "F", "operator": "op", "slots": 4,
                                "catalog_serial": serial.serial - 1})  # fmt: skip
        other.heartbeat = lambda: {
            "slots": 4, "slots_busy": 3, "day": datetime.now(UTC).date(), "hubs_today": {"FAILED": 2},
            "outbox_backlog": 5, "anchors_waiting": 1, "catalog_serial": serial.serial - 1,
        }  # fmt: skip
        running = asyncio.create_task(other.run())
        try:
            settings = client_settings(broker.url, username=None, ca=None)
            seen: list[FleetView] = []

            async def both() -> bool:
                seen.append(await collect(broker.url, settings))
                return len([s for s in seen[-1].stations if s.slots_busy is not None]) == 2

            deadline = asyncio.get_running_loop().time() + 30
            while not await both():
                assert asyncio.get_running_loop().time() < deadline, seen[-1]
                await asyncio.sleep(0.1)
            command = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "from station.cli import main; main()", "fleet", "status", "--broker",
                broker.url, "--json", stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await command.communicate()
            assert command.returncode == 0
            table = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "from station.cli import main; main()", "fleet", "status", "--broker",
                broker.url, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            text = (await table.communicate())[0].decode()
        finally:
            other.stop()
            await asyncio.wait_for(running, 15)
            other_store.close()
    finally:
        bridge.terminate()
        bridge.wait(10)
    view = json.loads(out)
    stations = {s["station"]: s for s in view["stations"]}
    assert list(stations) == [STATION, "st-south-09"]  # by region, then name
    ran, online = stations[STATION], stations["st-south-09"]
    assert (ran["state"], ran["hubs_today"], ran["slots_busy"], ran["slots"]) == ("offline", {"REFLASHED": 1}, 0, 1)
    assert ran["last_seen"] is not None
    assert ran["outbox_backlog"] == 0
    assert (ran["catalog_serial"], ran["catalog_outdated"]) == (serial.serial, False)
    assert (online["state"], online["hubs_today"], online["slots_busy"], online["outbox_backlog"]) == (
        "online", {"FAILED": 2}, 3, 5
    )  # fmt: skip
    assert (online["catalog_serial"], online["catalog_outdated"]) == (serial.serial - 1, True)
    assert view["newest_catalog_serial"] == serial.serial
    assert f"OLDER than {serial.serial}" in text
    assert "st-south-09" in text


def status(station: str, state: str, at: datetime | None, serial: int | None) -> StationStatus:
    return StationStatus.model_validate(
        {"state": state, "station": station, "region": "North", "session": 1, "at": at, "software_version": "1",
         "facility": "F", "slots": 2, "catalog_serial": serial}
    )  # fmt: skip


def heartbeat(station: str, day: str, hubs: dict[str, int], serial: int | None) -> StationHeartbeat:
    return StationHeartbeat.model_validate(
        {"station": station, "region": "North", "session": 1, "at": f"{day}T23:59:00Z", "slots": 2, "slots_busy": 0,
         "day": day, "hubs_today": hubs, "outbox_backlog": 0, "anchors_waiting": 0, "catalog_serial": serial}
    )  # fmt: skip


def test_the_view_counts_only_today_and_takes_the_heartbeats_catalog() -> None:
    now = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    view = fleet_view(
        [status("a", "online", now, 7), status("b", "offline", None, 9), status("c", "online", now, None)],
        # a's heartbeat is from yesterday: its hubs are not today's; b reloaded a newer catalog (SIGHUP) since.
        [heartbeat("a", "2026-12-05", {"REFLASHED": 40}, 7), heartbeat("b", "2026-12-06", {"REFUSED": 1}, 11)],
        at=now,
    )
    rows: dict[str, Any] = {s.station: s for s in view.stations}
    assert view.newest_catalog_serial == 11
    assert (rows["a"].hubs_today, rows["a"].catalog_outdated) == ({}, True)
    assert (rows["b"].hubs_today, rows["b"].catalog_serial, rows["b"].catalog_outdated) == ({"REFUSED": 1}, 11, False)
    assert rows["b"].last_seen == datetime(2026, 12, 6, 23, 59, tzinfo=UTC)  # the will's `at` is null
    assert (rows["c"].slots_busy, rows["c"].catalog_serial, rows["c"].catalog_outdated) == (None, None, False)


def test_a_broker_that_does_not_answer_is_said() -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, ["fleet", "status", "--broker", url, "--timeout", "5"])
    assert result.exit_code == 1
    assert f"error: {url}: " in result.output
    result = CliRunner().invoke(main, ["fleet", "status", "--broker", "http://nowhere"])
    assert result.exit_code == 2
    assert "--broker must be mqtt://host:port" in result.output
