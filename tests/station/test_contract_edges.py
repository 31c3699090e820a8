"""Contract 1.1 at its edges, on a real Mosquitto: MQTT v5 properties, strict acks, bridge presence, the will of a
reporter that fails, telemetry on change, and one-shot commands that never speak for the station."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from simulators.dsp_bridge import DspBridge
from station.config import MqttConfig
from station.messages import topic
from station.mosquitto import Mosquitto
from station.reporter import Reporter
from station.store import Store
from tests.station.conftest import ACTOR, hub_id, live_state_of
from tests.station.test_reporting import REGION, eventually, finish_jobs

BIRTH = {"software_version": "test", "facility": ACTOR.facility, "slots": 1}


def prop(message: aiomqtt.Message, name: str) -> Any:
    """An MQTT v5 property of a received message (paho's Properties sets them as dynamic attributes)."""
    return getattr(message.properties, name, None)


def reporter_for(store: Store, broker: Mosquitto, **kwargs: Any) -> Reporter:
    config = MqttConfig(url=broker.url, republish_after_s=kwargs.pop("republish_after_s", 1.0))
    return Reporter(store, config, station=ACTOR.station, region=REGION, birth=BIRTH, **kwargs)


def watcher(broker: Mosquitto) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", broker.port, identifier=f"watch-{uuid.uuid4()}",
                          protocol=aiomqtt.ProtocolVersion.V5)  # fmt: skip


async def test_results_carry_v5_properties_and_a_sequence(store: Store, private_mosquitto: Mosquitto) -> None:
    reporter = reporter_for(store, private_mosquitto)
    async with watcher(private_mosquitto) as client:
        await client.subscribe(topic("result", region=REGION, station=ACTOR.station), qos=1)
        task = asyncio.create_task(reporter.run())
        finish_jobs(store, 1, 3)
        seen: list[aiomqtt.Message] = []
        try:
            async with asyncio.timeout(10):
                async for message in client.messages:
                    seen.append(message)
                    if len(seen) == 3:
                        break
        finally:
            reporter.stop()
            await task
    payloads = [json.loads(m.payload) for m in seen]
    assert sorted(p["sequence"] for p in payloads) == [1, 2, 3]
    assert {p["schema"] for p in payloads} == {"reflash.hub-result/1.1"}
    for message, payload in zip(seen, payloads, strict=True):
        assert prop(message, "ContentType") == "application/json"
        assert prop(message, "PayloadFormatIndicator") == 1
        assert prop(message, "ResponseTopic") == topic("ack", region=REGION, station=ACTOR.station)
        assert prop(message, "CorrelationData") == payload["message_id"].encode()


async def test_acks_that_the_schema_rejects_are_refused(
    store: Store, private_mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    reporter = reporter_for(store, private_mosquitto, republish_after_s=60)
    task = asyncio.create_task(reporter.run())
    try:
        finish_jobs(store, 1, 1)
        await eventually(lambda: store.outbox_counts()["at_broker"] == 1, what="the result at the broker")
        message_id = store.outbox.messages()[0].message_id
        good = {"schema": "reflash.dsp-ack/1.1", "message_id": message_id, "result": "applied", "reason": None,
                "bridge": "b", "at": "2026-11-30T10:00:00.000Z"}  # fmt: skip
        bad = [
            {k: v for k, v in good.items() if k != "schema"},
            {k: v for k, v in good.items() if k != "reason"},
            good | {"message_id": message_id.replace("-", "")},
            good | {"schema": "reflash.dsp-ack/1.2"},
        ]
        async with watcher(private_mosquitto) as client:
            for ack in bad:
                await client.publish(topic("ack", region=REGION, station=ACTOR.station), json.dumps(ack), qos=1)
            await eventually(lambda: reporter.refused_acks == 4, what="four refused acks")
            assert store.outbox_counts()["at_broker"] == 1
            # A 1.0 bridge's ack (no minor version, `reason` present) is accepted.
            legacy = good | {"schema": "reflash.dsp-ack/1"}
            await client.publish(topic("ack", region=REGION, station=ACTOR.station), json.dumps(legacy), qos=1)
            await eventually(lambda: store.outbox_counts()["confirmed"] == 1, what="the valid ack recorded")
    finally:
        reporter.stop()
        await task
    assert len([r for r in caplog.records if "refusing an ack" in r.getMessage()]) == 1
    assert store.outbox.messages()[0].publishes == 1


async def test_no_republishing_while_no_bridge_is_online(
    store: Store, private_mosquitto: Mosquitto, tmp_path: Path
) -> None:
    bridge = DspBridge(private_mosquitto.url, tmp_path / "smi.db")
    bridge_task = asyncio.create_task(bridge.run())
    await asyncio.wait_for(bridge.subscribed.wait(), 10)
    reporter = reporter_for(store, private_mosquitto, republish_after_s=0.3)
    task = asyncio.create_task(reporter.run())
    try:
        await eventually(lambda: reporter.bridge_online is True, what="the bridge's birth")
        bridge.stop()
        await bridge_task
        bridge.smi.close()
        await eventually(lambda: reporter.bridge_online is False, what="the bridge's death")
        finish_jobs(store, 1, 5)
        reporter.wake.set()
        await eventually(lambda: store.outbox_counts()["at_broker"] == 5, what="all at the broker")
        await asyncio.sleep(2.5)  # many times republish_after_s: a blind timer would have republished
        assert {message.publishes for message in store.outbox.messages()} == {1}
        bridge = DspBridge(private_mosquitto.url, tmp_path / "smi.db")
        bridge_task = asyncio.create_task(bridge.run())
        # The bridge's persistent session held them: all five confirmed, without waiting for a republish.
        await eventually(lambda: store.outbox_counts()["confirmed"] == 5, what="five confirmations")
        assert reporter.bridge_online is True
    finally:
        reporter.stop()
        bridge.stop()
        await asyncio.gather(task, bridge_task)
        bridge.smi.close()


async def test_a_failing_reporter_leaves_offline_as_the_last_word(store: Store, mosquitto: Mosquitto) -> None:
    status = topic("status", region=REGION, station="st-fails")

    def broken() -> list[dict[str, Any]]:
        raise RuntimeError("telemetry bug")

    config = MqttConfig(url=mosquitto.url)
    reporter = Reporter(store, config, station="st-fails", region=REGION, birth=BIRTH, telemetry=live_state_of(broken))
    seen: list[dict[str, Any]] = []
    async with watcher(mosquitto) as client:
        await client.subscribe(status, qos=1)
        with pytest.raises(RuntimeError, match="telemetry bug"):
            await reporter.run()
        async with asyncio.timeout(10):
            async for message in client.messages:
                seen.append(json.loads(message.payload))
                if seen[-1]["state"] == "offline":
                    break
    assert [s["state"] for s in seen] == ["online", "offline"]
    assert seen[0]["session"] == seen[1]["session"]
    assert seen[1]["at"] is None  # the will: the broker published it, at a time the station could not know
    assert seen[0]["at"] is not None


async def test_telemetry_only_on_change_and_expiring(store: Store, mosquitto: Mosquitto) -> None:
    view = {"slot": "A1", "state": "transferring", "chf_id": hub_id(1), "bytes_done": 10, "bytes_total": 100,
            "bytes_per_s": 5.0}  # fmt: skip
    config = MqttConfig(url=mosquitto.url)
    reporter = Reporter(store, config, station="st-quiet", region=REGION, birth=BIRTH,
                        telemetry=(live := live_state_of(lambda: [dict(view)])),
                        telemetry_interval_s=0.05)  # fmt: skip
    seen: list[aiomqtt.Message] = []
    async with watcher(mosquitto) as client:
        await client.subscribe(topic("slot", region=REGION, station="st-quiet", slot="A1"), qos=0)
        task = asyncio.create_task(reporter.run())
        try:
            async with asyncio.timeout(10):
                seen.append(await anext(aiter(client.messages)))
            await asyncio.sleep(0.5)  # ten ticks, nothing changed
            view["bytes_done"] = 20
            live.changed()
            async with asyncio.timeout(10):
                seen.append(await anext(aiter(client.messages)))
            await asyncio.sleep(0.3)
            assert len(client.messages) == 0
        finally:
            reporter.stop()
            await task
    assert [json.loads(m.payload)["bytes_done"] for m in seen] == [10, 20]
    assert 0 < prop(seen[0], "MessageExpiryInterval") <= 30
    assert prop(seen[0], "ContentType") == "application/json"


def _station_config(tmp_path: Path, broker: Mosquitto, station: str) -> Path:
    from firmware_catalog.keys import generate_key, write_keypair

    write_keypair(generate_key(), tmp_path / "authority")
    config = tmp_path / "station.toml"
    config.write_text(
        f'[station]\nid = "{station}"\nregion = "South"\noperator = "op-1"\nfacility_approval = "SSC-1"\n'
        f'[catalog]\nfolder = "catalog"\nauthority_key = "authority.pub"\n[mqtt]\nurl = "{broker.url}"\n'
    )
    return config


async def test_orders_close_beside_a_running_daemon_leaves_the_daemon_alone(
    tmp_path: Path, private_mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    from click.testing import CliRunner

    from station.cli import main
    from station.config import load_config
    from station.daemon import status_path
    from station.messages import OrderSummary
    from station.store import Actor

    station = "st-close-2"
    config_path = _station_config(tmp_path, private_mosquitto, station)
    runner = CliRunner()
    for n in (1, 2):
        order = tmp_path / f"order-{n}.csv"
        order.write_text(f"order_ref,requesting_party,csp_region,chf_id\nC-{n},SUP,South,{hub_id(n)}\n")
        imported = await asyncio.to_thread(runner.invoke, main, ["orders", "import", str(order), "--config",
                                                                 str(config_path)])  # fmt: skip
        assert imported.exit_code == 0, imported.output
    config = load_config(str(config_path))
    store = Store(config.resolve(config.station.store), Actor(station, "op-1", "SSC-1"))
    assert config.mqtt is not None
    daemon = Reporter(store, config.mqtt, station=station, region="South", birth=BIRTH)
    statuses: list[dict[str, Any]] = []
    status_topic = topic("status", region="South", station=station)
    async with watcher(private_mosquitto) as client:
        await client.subscribe(status_topic, qos=1)
        task = asyncio.create_task(daemon.run())
        await asyncio.wait_for(daemon.connected.wait(), 10)
        linked_since = daemon.link["since"]
        status_file = status_path(config)
        status_file.write_text(json.dumps({"updated_at": time.time(), "stopped": False}))
        closing = await asyncio.to_thread(runner.invoke, main, ["orders", "close", "C-1", "--config",
                                                                str(config_path)])  # fmt: skip
        assert closing.exit_code == 0, closing.output
        assert "queued" in closing.output
        await eventually(lambda: store.outbox_counts()["confirmed"] == 1, what="the daemon published the summary")
        assert daemon.connected.is_set()
        assert daemon.link["since"] == linked_since  # never kicked off
        # No daemon now: the command publishes the summary itself, with a client id of its own and no status.
        daemon.stop()
        await task
        status_file.write_text(json.dumps({"updated_at": time.time(), "stopped": True}))
        closing = await asyncio.to_thread(runner.invoke, main, ["orders", "close", "C-2", "--config",
                                                                str(config_path)])  # fmt: skip
        assert closing.exit_code == 0, closing.output
        assert "order summary published" in closing.output
        await asyncio.sleep(0.5)
        while len(client.messages):
            statuses.append(json.loads((await anext(aiter(client.messages))).payload))
    assert [s["state"] for s in statuses] == ["online", "offline"]  # the daemon's, and nothing from the command
    assert not [r for r in caplog.records if "connection lost" in r.getMessage()]
    summaries = [OrderSummary.model_validate_json(message.payload) for message in store.outbox.messages()]
    assert {s.order_ref for s in summaries} == {"C-1", "C-2"}
    assert store.outbox_counts()["confirmed"] == 2
    store.close()


async def test_a_dsp_asks_for_a_range_again_and_gets_it(
    store: Store, private_mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """A DSP that lost results 2..3 (its SMI restored from an old backup) asks the station for them again: the
    station publishes them again with their message_ids, and the bridge applies what it no longer has."""
    bridge = DspBridge(private_mosquitto.url, tmp_path / "smi.db")
    bridge_task = asyncio.create_task(bridge.run())
    await asyncio.wait_for(bridge.subscribed.wait(), 10)
    reporter = reporter_for(store, private_mosquitto, republish_after_s=60)
    task = asyncio.create_task(reporter.run())
    try:
        finish_jobs(store, 1, 4)
        reporter.wake.set()
        await eventually(lambda: store.outbox_counts()["confirmed"] == 4, what="four confirmations")
        assert bridge.smi.applied_count() == 4
        sequence = {job.id: job.result_sequence for job in store.jobs()}
        lost = [m.message_id for m in store.outbox.messages() if m.job_id and sequence[m.job_id] in (2, 3)]
        bridge.smi.forget(lost)  # the DSP's loss, below our own seam: the bridge's SMI table
        async with watcher(private_mosquitto) as dsp:
            request = {"schema": "reflash.resend-request/1.1", "from_sequence": 2, "to_sequence": 3,
                       "bridge": "dsp-bridge-1", "at": "2026-11-30T10:00:00.000Z"}  # fmt: skip
            resend = topic("resend", region=REGION, station=ACTOR.station)
            await dsp.publish(resend, json.dumps(request).encode(), qos=1)
            await dsp.publish(resend, b'{"schema": "reflash.resend-request/1.1", "from_sequence": 0}', qos=1)
        await eventually(lambda: bridge.smi.applied_count() == 4, what="the lost two applied again")
        await eventually(lambda: store.outbox_counts()["confirmed"] == 4, what="confirmed again")
        sequence = {job.id: job.result_sequence for job in store.jobs()}
        publishes = {sequence[m.job_id]: m.publishes for m in store.outbox.messages() if m.job_id is not None}
        assert publishes == {1: 1, 2: 2, 3: 2, 4: 1}  # only the range asked for went out again
        (asked,) = [e.data for e in store.audit_entries() if e.kind == "resend_requested"]
        assert asked == {"from_sequence": 2, "to_sequence": 3, "by": "dsp-bridge-1", "queued": 2}
    finally:
        reporter.stop()
        bridge.stop()
        await asyncio.gather(task, bridge_task)
        bridge.smi.close()
