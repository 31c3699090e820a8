"""Sites and the centre on real Mosquitto processes started from the shipped files (config/mosquitto.conf and
mosquitto.acl with config/fleet/site-bridge.conf at the site; config/fleet/central-broker.conf and central.acl at
the centre), over TLS with per-site certificates, two DSP bridges in one shared-subscription group writing one SMI,
and stations publishing to their site broker. The link is cut, a bridge is killed, and every result reaches the SMI
exactly once, with what docs/mqtt-api.md promises about order."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from station.fleet_brokers import Fleet
from station.outcome import Outcome
from tests.fleet.conftest import BEFORE, FleetStation, eventually

SITE = "site-north-a"
STATIONS = {"st-north-01": "North", "st-north-02": "North"}
# The site broker's queue limit for this test, instead of the shipped 200,000: small enough that the outage below
# overflows it, so the test shows what a full queue does (the broker drops; the station's outbox still has it).
SITE_QUEUE = 150
DROPPED = "Outgoing messages are being dropped for client"


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    fleet = Fleet(tmp_path, {SITE: STATIONS}, site_max_queued=SITE_QUEUE)
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()


@pytest.fixture
async def stations(fleet: Fleet, tmp_path: Path) -> AsyncIterator[list[FleetStation]]:
    site = fleet.sites[SITE]
    running = [FleetStation(site, name, tmp_path / "stations", n) for n, name in enumerate(STATIONS, start=1)]
    for station in running:
        station.start()
    try:
        yield running
    finally:
        for station in running:
            await station.stop()


def _smi(fleet: Fleet) -> tuple[dict[str, str], dict[str, str | None]]:
    """What the SMI holds: message_id -> station of every applied result, and device ID -> firmware version."""
    db = sqlite3.connect(fleet.smi_path)
    try:
        applied = dict(db.execute("SELECT message_id, station FROM applied").fetchall())
        devices = dict(db.execute("SELECT device_id, firmware_version FROM smi_devices").fetchall())
    finally:
        db.close()
    return applied, devices


def _confirmed(stations: list[FleetStation]) -> int:
    return sum(s.counts()["confirmed"] for s in stations)


async def test_every_result_reaches_the_smi_once_through_a_link_cut_and_a_killed_bridge(
    fleet: Fleet, stations: list[FleetStation]
) -> None:
    site = fleet.sites[SITE]
    # Bridge presence crosses centre -> site: each station sees both DSP bridges online through its site broker.
    await eventually(lambda: all(s.reporter.bridge_online and len(s.reporter.bridges) == 2 for s in stations),
                     within=30, what="both DSP bridges online at every station")  # fmt: skip

    # Batch 1, link up: 40 hubs a station.
    for s in stations:
        s.finish([(n, Outcome.REFLASHED, "01020000") for n in range(40)])
    await eventually(lambda: _confirmed(stations) == 80, within=30, what="batch 1 confirmed")

    # The site-to-centre link goes down; the benches keep going: 100 hubs a station, 20 of them failing first and
    # then re-flashed (two results for one hub, in order), 10 of batch 1's re-flashed again to a newer version.
    await site.link.cut()
    for s in stations:
        jobs = [(n, Outcome.REFLASHED, "01020000") for n in range(100, 170)]
        for n in range(200, 220):
            jobs += [(n, Outcome.FAILED, BEFORE), (n, Outcome.REFLASHED, "01020000")]
        jobs += [(n, Outcome.REFLASHED, "01030000") for n in range(10)]
        s.finish(jobs)
    total = 2 * (40 + 70 + 40 + 10)
    # The site broker takes them (PUBACK: at_broker) and queues them for the link, up to its limit; nothing can be
    # confirmed; rows republished on their backoff overflow the queue, and the broker drops what is over it.
    await eventually(lambda: all(s.counts()["pending"] == 0 for s in stations), within=30, what="site took all")
    log = site.broker.workdir / "mosquitto.log"
    await eventually(lambda: DROPPED in log.read_text(), within=30, what="the site queue to overflow")
    await asyncio.sleep(2)  # more republishing rounds while cut: still nothing confirmed
    assert _confirmed(stations) == 80

    # The link comes back; the queue drains to the centre and the bridges; one bridge is killed while it does.
    await site.link.restore()
    await eventually(lambda: _confirmed(stations) > 80, within=30, what="the first confirmations after the cut")
    fleet.kill_bridge("dsp-bridge-2")
    assert _confirmed(stations) < total, "the kill came after the batch: nothing was mid-batch"
    await asyncio.sleep(3)
    fleet.start_bridge("dsp-bridge-2")
    await eventually(lambda: _confirmed(stations) == total, within=45, what="every result confirmed")

    # Exactly once: the SMI applied every result of every station, each message_id once, and nothing else.
    applied, devices = _smi(fleet)
    sent = {row.message_id: s.station for s in stations for row in s.store.outbox.messages(kind="hub_result")}
    assert len(sent) == total
    assert applied == sent
    # Each station's sequence numbers reached the DSP without gaps: 1..N (docs/mqtt-api.md, HubResult).
    for s in stations:
        sequences = sorted(json.loads(r.payload)["sequence"] for r in s.store.outbox.messages(kind="hub_result"))
        assert sequences == list(range(1, len(sequences) + 1))
        assert {r.message_id for r in s.store.outbox.messages(kind="hub_result")} <= applied.keys()
    # What the SMI must hold afterwards: the version of each hub's latest result, whatever order the two bridges
    # applied them in (a FAILED result and the REFLASHED one after it went through different bridges).
    for s in stations:
        for n in range(200, 220):
            chf, gpf = s.hub(n)
            assert (devices[chf], devices[gpf]) == ("01020000", "01020000"), f"{s.station} hub {n}"
        for n in range(10):
            assert devices[s.hub(n)[0]] == "01030000"
        assert devices[s.hub(10)[0]] == "01020000"


async def test_what_crosses_the_link(fleet: Fleet, stations: list[FleetStation]) -> None:
    """At the centre: a station's result under its own region and station, its retained status, the link's state,
    and the ack on its way back; at the station, that ack confirms the row. The link is MQTT 3.1.1 (Mosquitto 2.0.11
    cannot bridge MQTT v5 over TLS: config/fleet/site-bridge.conf), so no MQTT v5 property crosses it; nothing in the
    contract needs one to."""
    await eventually(lambda: all(s.reporter.bridge_online for s in stations), within=30, what="bridges online")
    cert, key = fleet.ca.issue("dashboard")
    tls = aiomqtt.TLSParameters(ca_certs=str(fleet.ca.ca), certfile=str(cert), keyfile=str(key))
    async with aiomqtt.Client("127.0.0.1", fleet.central.port, identifier=f"dash-{uuid.uuid4()}", tls_params=tls,
                              protocol=aiomqtt.ProtocolVersion.V5) as centre:  # fmt: skip
        await centre.subscribe("reflash/v1/North/st-north-01/#", qos=1)
        await centre.subscribe(f"reflash-link/{SITE}/state", qos=1)
        stations[0].finish([(1, Outcome.REFLASHED, "01020000")])
        seen: dict[str, aiomqtt.Message] = {}
        async with asyncio.timeout(30):
            async for message in centre.messages:
                seen[str(message.topic).rsplit("/", 1)[-1] if "link" not in str(message.topic) else "link"] = message
                if {"status", "result", "ack", "link"} <= seen.keys():
                    break
    status, result, ack, link = seen["status"], seen["result"], seen["ack"], seen["link"]
    assert status.retain
    assert json.loads(status.payload)["state"] == "online"
    assert link.retain
    assert link.payload == b"1"
    assert str(result.topic) == "reflash/v1/North/st-north-01/result"
    message_id = json.loads(result.payload)["message_id"]
    assert json.loads(ack.payload)["message_id"] == message_id
    assert result.properties is None or getattr(result.properties, "ResponseTopic", None) is None
    await eventually(lambda: stations[0].counts()["confirmed"] == 1, within=30, what="the ack back at the station")
