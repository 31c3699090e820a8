"""Results from the outbox to the SMI through a real Mosquitto: exactly once, through outages of either side."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from simulators.dsp_bridge import DspBridge
from station.audit import AuditEntry
from station.config import MqttConfig
from station.messages import hub_result, topic
from station.mosquitto import Mosquitto
from station.outcome import Outcome
from station.reporter import Reporter
from station.store import JobRecord, JobState, Store
from station.store.crash_left_state import forget_confirmations
from tests.station.conftest import ACTOR, hub_id, live_state_of

REGION = "North"


def builder(job: JobRecord, entry: AuditEntry, message_id: str) -> dict[str, Any]:
    return hub_result(job, entry.hash, message_id, station=ACTOR.station, region=REGION, requesting_party=None)


def finish_jobs(store: Store, first: int, count: int) -> None:
    for n in range(first, first + count):
        identity = {"manufacturer": "121D", "model": "0000", "hardware_version": "1200", "firmware_version": "01000000"}
        job_id = store.start_job(
            chf_id=hub_id(n), gpf_id=hub_id(n + 50_000), order_ref=None, slot="A1", identity=identity
        ).id
        store.finish_job(
            job_id, outcome=Outcome.REFLASHED, reason="OK", firmware_after="01020000", target_version="01020000",
            image_sha256="ab" * 32, hub_sha256="ab" * 32, charge_pence=0, currency="GBP", report=builder,
        )  # fmt: skip


async def eventually(check: Callable[[], bool], within: float = 30.0, what: str = "") -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Running:
    """A reporter and a bridge running as tasks, with a way to stop and restart either."""

    def __init__(self, store: Store, broker: Mosquitto, tmp_path: Path) -> None:
        self.store = store
        self.broker = broker
        self.smi_path = tmp_path / "smi.db"
        self.config = MqttConfig(url=broker.url, republish_after_s=1.0)
        self.reporter = self._reporter()
        self.bridge = DspBridge(broker.url, self.smi_path)
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def _reporter(self) -> Reporter:
        birth = {"software_version": "test", "facility": ACTOR.facility, "operator": ACTOR.operator, "slots": 1}
        return Reporter(self.store, self.config, station=ACTOR.station, region=REGION, birth=birth)

    def start(self, which: str) -> None:
        if which == "reporter":
            self.reporter = self._reporter()
            self.tasks[which] = asyncio.create_task(self.reporter.run())
        else:
            self.bridge = DspBridge(self.broker.url, self.smi_path)
            self.tasks[which] = asyncio.create_task(self.bridge.run())

    async def stop(self, which: str) -> None:
        (self.reporter if which == "reporter" else self.bridge).stop()
        await asyncio.wait_for(self.tasks.pop(which), 15)
        if which == "bridge":
            self.bridge.smi.close()

    def confirmed(self) -> int:
        return self.store.outbox_counts()["confirmed"]


@pytest.fixture
async def running(store: Store, private_mosquitto: Mosquitto, tmp_path: Path) -> AsyncIterator[Running]:
    r = Running(store, private_mosquitto, tmp_path)
    r.start("bridge")
    await asyncio.wait_for(r.bridge.subscribed.wait(), 10)
    r.start("reporter")
    yield r
    for which in list(r.tasks):
        await r.stop(which)


def smi_rows(path: Path) -> dict[str, str]:
    import sqlite3

    db = sqlite3.connect(path)
    rows = {row[0]: row[1] for row in db.execute("SELECT device_id, firmware_version FROM smi_devices")}
    db.close()
    return rows


def applied_count(path: Path) -> int:
    import sqlite3

    db = sqlite3.connect(path)
    count = int(db.execute("SELECT COUNT(*) FROM applied").fetchone()[0])
    db.close()
    return count


async def test_results_reach_the_smi_and_are_confirmed(running: Running) -> None:
    finish_jobs(running.store, 1, 20)
    running.reporter.wake.set()
    await eventually(lambda: running.confirmed() == 20, what="20 confirmations")
    rows = smi_rows(running.smi_path)
    assert len(rows) == 40  # CHF and GPF of each hub
    assert set(rows.values()) == {"01020000"}
    assert applied_count(running.smi_path) == 20
    acked = [ack for e in running.store.audit_entries() if e.kind == "dsp_acks" for ack in e.data["acks"]]
    assert sorted(a["result"] for a in acked) == ["applied"] * 20


async def test_broker_outage_mid_batch_loses_nothing_and_applies_once(running: Running) -> None:
    finish_jobs(running.store, 1, 30)
    running.reporter.wake.set()
    await eventually(lambda: running.confirmed() >= 1, what="the first confirmation")
    running.broker.stop()
    # The bench keeps flashing while the broker is away: results wait in the outbox.
    finish_jobs(running.store, 31, 30)
    await asyncio.sleep(3)
    assert running.store.outbox_counts()["confirmed"] < 60
    running.broker.start()
    await eventually(lambda: running.confirmed() == 60, within=60, what="60 confirmations after the outage")
    assert applied_count(running.smi_path) == 60
    assert len(smi_rows(running.smi_path)) == 120


async def test_bridge_outage_results_wait_and_arrive_once(running: Running) -> None:
    await running.stop("bridge")
    finish_jobs(running.store, 1, 25)
    running.reporter.wake.set()
    await eventually(lambda: running.store.outbox_counts()["at_broker"] == 25, what="all at the broker")
    assert running.confirmed() == 0
    await asyncio.sleep(2.5)  # past republish_after_s: the reporter publishes them again
    running.start("bridge")
    await eventually(lambda: running.confirmed() == 25, within=60, what="25 confirmations")
    assert applied_count(running.smi_path) == 25


async def test_reporter_restart_republishes_and_duplicates_are_harmless(running: Running) -> None:
    finish_jobs(running.store, 1, 10)
    running.reporter.wake.set()
    await eventually(lambda: running.confirmed() == 10, what="10 confirmations")
    # Forget the confirmations, as if the station died before writing them: everything is published again.
    forget_confirmations(running.store.work)
    await running.stop("reporter")
    running.start("reporter")
    await eventually(lambda: running.confirmed() == 10, what="10 confirmations again")
    acks = [json.loads(message.ack or "null") for message in running.store.outbox.messages()]
    assert {ack["result"] for ack in acks} == {"duplicate"}
    assert applied_count(running.smi_path) == 10


async def test_status_birth_and_clean_offline(running: Running, private_mosquitto: Mosquitto) -> None:
    status = topic("status", region=REGION, station=ACTOR.station)
    await asyncio.wait_for(running.reporter.connected.wait(), 10)
    seen: list[dict[str, Any]] = []

    async def watch(ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", private_mosquitto.port, identifier=f"watch-{uuid.uuid4()}") as client:
            await client.subscribe(status, qos=1)
            ready.set()
            async for message in client.messages:
                seen.append(json.loads(message.payload))
                if seen[-1]["state"] == "offline":
                    return

    ready = asyncio.Event()
    watcher = asyncio.create_task(watch(ready))
    await asyncio.wait_for(ready.wait(), 10)
    await running.stop("reporter")
    await asyncio.wait_for(watcher, 10)
    assert [s["state"] for s in seen] == ["online", "offline"]  # the retained birth, then the explicit death
    assert seen[0]["session"] == seen[1]["session"]


async def test_malformed_results_are_rejected_and_kept(running: Running, private_mosquitto: Mosquitto) -> None:
    result_topic = topic("result", region=REGION, station=ACTOR.station)
    ack_topic = topic("ack", region=REGION, station=ACTOR.station)
    bad_id = str(uuid.uuid4())
    acks: dict[str, dict[str, Any]] = {}
    async with aiomqtt.Client("127.0.0.1", private_mosquitto.port, identifier=f"probe-{uuid.uuid4()}") as client:
        await client.subscribe(ack_topic, qos=1)
        await client.publish(result_topic, json.dumps({"message_id": bad_id, "chf_id": "nonsense"}).encode(), qos=1)
        # Valid in every field but one: a finish time that is no date-time.
        late_id = str(uuid.uuid4())
        job = JobRecord(
            id=1, chf_id=hub_id(900), gpf_id=hub_id(901), order_ref=None, slot="A1", state=JobState.FINAL,
            outcome=Outcome.REFLASHED, reason="REFLASHED", manufacturer="121D", model="0000", hardware_version="1200",
            firmware_before="01000000", firmware_after="01020000", target_version="01020000", image_sha256="ab" * 32,
            hub_sha256="ab" * 32, attempts=1, started_at="2026-11-23T10:00:00Z", finished_at="2026-11-23T10:01:00Z",
            operator="op", facility="f", audit_hash="cd" * 32, result_sequence=1,
        )  # fmt: skip
        good = hub_result(job, "cd" * 32, late_id, station=ACTOR.station, region=REGION, requesting_party=None)
        bad_time = good | {"finished_at": "yesterday"}
        await client.publish(result_topic, json.dumps(bad_time).encode(), qos=1)
        await client.publish(result_topic, b"\xff not json", qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                ack = json.loads(message.payload)
                acks[ack["message_id"]] = ack
                if {bad_id, late_id} <= set(acks):
                    break
    assert acks[bad_id]["result"] == "rejected"
    assert acks[bad_id]["reason"]
    assert acks[late_id]["result"] == "rejected"
    assert "finished_at" in acks[late_id]["reason"]
    await eventually(lambda: len(running.bridge.smi.rejected()) == 3, what="all three kept for inspection")
    assert smi_rows(running.smi_path) == {}


def test_order_close_publishes_a_retained_summary(tmp_path: Path, mosquitto: Mosquitto) -> None:
    from click.testing import CliRunner

    from firmware_catalog.keys import generate_key, write_keypair
    from station.cli import main
    from station.messages import OrderSummary

    write_keypair(generate_key(), tmp_path / "authority")
    config = tmp_path / "station.toml"
    config.write_text(
        '[station]\nid = "st-close-1"\nregion = "South"\noperator = "op-1"\nfacility_approval = "SSC-1"\n'
        f'[catalog]\nfolder = "catalog"\nauthority_key = "authority.pub"\n[mqtt]\nurl = "{mosquitto.url}"\n'
    )
    order = tmp_path / "order.csv"
    order.write_text(f"order_ref,requesting_party,csp_region,chf_id\nC-1,SUP,South,{hub_id(1)}\n")
    runner = CliRunner()
    assert runner.invoke(main, ["orders", "import", str(order), "--config", str(config)]).exit_code == 0
    result = runner.invoke(main, ["orders", "close", "C-1", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "order summary published" in result.output

    async def retained() -> bytes:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier=f"check-{uuid.uuid4()}") as client:
            await client.subscribe(topic("order", region="South", station="st-close-1", order_ref="C-1"), qos=1)
            async with asyncio.timeout(10):
                message = await anext(aiter(client.messages))
                return bytes(message.payload)

    summary = OrderSummary.model_validate_json(asyncio.run(retained()))
    assert summary.order_ref == "C-1"
    assert summary.never_received == [hub_id(1)]


async def test_slot_progress_telemetry_at_qos0(store: Store, mosquitto: Mosquitto) -> None:
    from station.messages import SlotProgress

    view = {"slot": "A1", "state": "transferring", "chf_id": hub_id(1), "bytes_done": 10, "bytes_total": 100,
            "bytes_per_s": 5.0}  # fmt: skip
    birth = {"software_version": "test", "facility": ACTOR.facility, "slots": 1}
    config = MqttConfig(url=mosquitto.url)
    reporter = Reporter(store, config, station="st-telemetry", region=REGION, birth=birth,
                        telemetry=live_state_of(lambda: [view]), telemetry_interval_s=0.1)  # fmt: skip
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier=f"watch-{uuid.uuid4()}") as client:
        await client.subscribe(topic("slot", region=REGION, station="st-telemetry", slot="A1"), qos=0)
        task = asyncio.create_task(reporter.run())
        try:
            async with asyncio.timeout(10):
                message = await anext(aiter(client.messages))
        finally:
            reporter.stop()
            await task
    progress = SlotProgress.model_validate_json(bytes(message.payload))
    assert (progress.slot, progress.bytes_done, progress.chf_id) == ("A1", 10, hub_id(1))
    assert message.qos == 0


async def test_two_bridges_share_the_results_and_apply_each_once(
    store: Store, private_mosquitto: Mosquitto, tmp_path: Path
) -> None:
    smi = tmp_path / "shared-smi.db"
    bridges = [DspBridge(private_mosquitto.url, smi, name=f"bridge-{n}") for n in (1, 2)]
    tasks = [asyncio.create_task(bridge.run()) for bridge in bridges]
    await asyncio.gather(*(asyncio.wait_for(b.subscribed.wait(), 10) for b in bridges))
    birth = {"software_version": "test", "facility": ACTOR.facility, "slots": 0}
    reporter = Reporter(store, MqttConfig(url=private_mosquitto.url), station=ACTOR.station, region=REGION,
                        birth=birth)  # fmt: skip
    reporter_task = asyncio.create_task(reporter.run())
    try:
        finish_jobs(store, 1, 40)
        reporter.wake.set()
        await eventually(lambda: store.outbox_counts()["confirmed"] == 40, what="40 confirmations")
    finally:
        reporter.stop()
        for bridge in bridges:
            bridge.stop()
        await asyncio.gather(reporter_task, *tasks)
    acks = [json.loads(message.ack or "null") for message in store.outbox.messages()]
    assert {ack["result"] for ack in acks} == {"applied"}
    assert applied_count(smi) == 40
    for bridge in bridges:
        bridge.smi.close()
