"""Per-site credentials at the centre (config/fleet/central.acl): a site's bridge carries only its own stations.
A station registered at the wrong warehouse (its site broker lets it in) gets nothing past the centre."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from station.fleet_brokers import Fleet
from station.outcome import Outcome
from tests.fleet.conftest import FleetStation, eventually

# st-north-02 belongs to site north-a at the centre; here the south site's broker admits it too (a mistake, or a
# hostile site), and it publishes through the south site's bridge.
SITES = {"site-north-a": {"st-north-01": "North"}, "site-south-a": {"st-south-01": "South", "st-north-02": "North"}}


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    fleet = Fleet(tmp_path, SITES, bridges=1)
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()


async def test_a_site_carries_only_its_own_stations(fleet: Fleet, tmp_path: Path) -> None:
    running = [
        FleetStation(fleet.sites[site], name, tmp_path / "stations", n)
        for n, (site, name) in enumerate(
            [("site-north-a", "st-north-01"), ("site-south-a", "st-south-01"), ("site-south-a", "st-north-02")],
            start=1,
        )
    ]
    for station in running:
        station.start()
    try:
        await eventually(lambda: all(s.reporter.bridge_online for s in running), within=30, what="bridge online")
        for station in running:
            station.finish([(n, Outcome.REFLASHED, "01020000") for n in range(5)])
        north, south, misplaced = running
        await eventually(lambda: north.counts()["confirmed"] == 5 and south.counts()["confirmed"] == 5,
                         within=30, what="both genuine stations confirmed")  # fmt: skip
        # The misplaced station's results reached its site broker and went no further: refused at the centre.
        assert misplaced.counts()["at_broker"] == 5
        assert misplaced.counts()["confirmed"] == 0
        db = sqlite3.connect(fleet.smi_path)
        stations = {row[0] for row in db.execute("SELECT DISTINCT station FROM applied")}
        db.close()
        assert stations == {"st-north-01", "st-south-01"}
    finally:
        for station in running:
            await station.stop()
