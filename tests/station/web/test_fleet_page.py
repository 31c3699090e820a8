"""The fleet page (/fleet) of a running station: every station the `[fleet]` broker knows, read from a real
Mosquitto, with the station itself (its own status and heartbeat) and another whose catalog is older."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import aiomqtt
import httpx

from station.messages import StationHeartbeat, topic
from station.mosquitto import Mosquitto
from station.showcase import STATION
from tests.station.test_slot_faults import Bench
from tests.station.web.conftest import PINS, start_station
from tests.station.web.test_api import sign_in


async def publish_other_station(url: str) -> None:
    """A second station's retained heartbeat, as its reporter publishes it, with a newer catalog (serial 2) than the
    demo's (1)."""
    heartbeat = StationHeartbeat.model_validate(
        {"station": "st-south-07", "region": "South", "session": 1, "at": datetime.now(UTC), "slots": 8,
         "slots_busy": 2, "day": datetime.now(UTC).date(), "hubs_today": {"REFLASHED": 12}, "outbox_backlog": 0,
         "anchors_waiting": 0, "catalog_serial": 2}
    )  # fmt: skip
    host, port = url.removeprefix("mqtt://").split(":")
    async with aiomqtt.Client(host, int(port), protocol=aiomqtt.ProtocolVersion.V5) as client:
        where = topic("heartbeat", region="South", station="st-south-07")
        await client.publish(where, heartbeat.model_dump_json(by_alias=True).encode(), qos=1, retain=True)


def row_of(page: str, station: str) -> str:
    parts = page.split(f'id="station-{station}"')
    return parts[1].split("</tr>")[0] if len(parts) > 1 else ""


def test_the_fleet_page_shows_every_station_and_flags_an_older_catalog(
    bench: Bench, private_mosquitto: Mosquitto
) -> None:
    url = private_mosquitto.url
    asyncio.run(publish_other_station(url))
    station = start_station(bench, refused_hub=False, web=f'\n[mqtt]\nurl = "{url}"\n\n[fleet]\nbroker = "{url}"\n')
    try:
        with httpx.Client(base_url=station.url, timeout=10) as client:
            assert client.get("/fleet").headers["location"] == "/sign-in"  # signed out: no fleet
            sign_in(client, "olive", PINS["olive"])
            deadline = time.monotonic() + 30
            page = client.get("/fleet")
            while "/1</td>" not in row_of(page.text, STATION):  # its birth and heartbeat, once sent
                assert time.monotonic() < deadline, page.text
                time.sleep(0.1)
                page = client.get("/fleet")
    finally:
        station.kill()
    assert page.status_code == 200
    row = row_of(page.text, STATION)
    assert row.startswith(' class="online">')
    assert "<td>0/1</td>" in row  # slots busy, of 1
    assert "older than 2" in row  # the demo's catalog, serial 1
    other = row_of(page.text, "st-south-07")
    assert other.startswith(' class="unknown">')  # a heartbeat, no status
    assert '<span class="outcome-REFLASHED">REFLASHED 12</span>' in other
    assert "older than" not in other
