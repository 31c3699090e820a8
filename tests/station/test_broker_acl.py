"""config/mosquitto.acl on a real Mosquitto: a station publishes only under its own region and topics, a dashboard
only reads, and every refusal is a failure the station sees."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from station.broker_client import BrokerClient, BrokerRefused, Outgoing
from station.config import MqttConfig
from station.messages import topic
from station.mosquitto import Mosquitto
from station.orders import OrderRequest
from station.reporter import Reporter
from station.store import Store
from tests.station.test_reporting import eventually, finish_jobs

CONFIG = Path(__file__).parents[2] / "config"
USERS = {"st-north-01": "pw-a", "st-north-02": "pw-b", "dsp-bridge": "pw-bridge"}


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.fail("mosquitto_passwd is missing: the mosquitto package provides it")
    passwd = tmp_path / "passwd"
    for user, password in USERS.items():
        subprocess.run([tool, "-b", *([] if passwd.exists() else ["-c"]), str(passwd), user, password], check=True)
    extra = f"allow_anonymous false\npassword_file {passwd}\nacl_file {CONFIG / 'mosquitto.acl'}\n"
    broker = Mosquitto(tmp_path / "broker", extra_conf=extra)
    broker.start()
    yield broker
    broker.stop()


def client(broker: Mosquitto, user: str) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1", broker.port, username=user, password=USERS[user], identifier=f"{user}-{uuid.uuid4()}",
        protocol=aiomqtt.ProtocolVersion.V5,
    )  # fmt: skip


async def test_station_cannot_publish_as_another_station(acl_broker: Mosquitto) -> None:
    b_results = topic("result", region="North", station="st-north-02")
    async with client(acl_broker, "dsp-bridge") as bridge, client(acl_broker, "st-north-01") as a:
        await bridge.subscribe(b_results, qos=1)
        # Station A forges a result under B's topic; the broker answers (PUBACK) having refused it.
        await a.publish(b_results, json.dumps({"forged": True}).encode(), qos=1)
        async with client(acl_broker, "st-north-02") as b:
            await b.publish(b_results, json.dumps({"genuine": True}).encode(), qos=1)
        async with asyncio.timeout(10):
            first = await anext(aiter(bridge.messages))
    # Had the broker taken A's message it would have been queued to the bridge before B's.
    assert json.loads(first.payload) == {"genuine": True}


async def test_station_reads_only_its_own_acks(acl_broker: Mosquitto) -> None:
    a_acks = topic("ack", region="North", station="st-north-01")
    b_acks = topic("ack", region="North", station="st-north-02")
    async with client(acl_broker, "st-north-01") as a, client(acl_broker, "dsp-bridge") as bridge:
        await a.subscribe(b_acks, qos=1)  # granted by MQTT, but the ACL delivers nothing from it
        await a.subscribe(a_acks, qos=1)
        await bridge.publish(b_acks, b'{"for": "b"}', qos=1)
        await bridge.publish(a_acks, b'{"for": "a"}', qos=1)
        async with asyncio.timeout(10):
            first = await anext(aiter(a.messages))
    assert str(first.topic) == a_acks


USERS.update({"st-south-01": "pw-c", "dashboard": "pw-dash"})


async def test_each_station_is_bound_to_its_region(acl_broker: Mosquitto) -> None:
    async with checked_client(acl_broker, "st-north-01") as a:
        await a.publish_checked(topic("result", region="North", station="st-north-01"), b"{}", qos=1)
        with pytest.raises(BrokerRefused) as refused:
            await a.publish_checked(topic("result", region="South", station="st-north-01"), b"{}", qos=1)
    assert refused.value.code == 0x87


async def test_dashboards_read_everything_and_publish_nothing(acl_broker: Mosquitto) -> None:
    results = topic("result", region="South", station="st-south-01")
    async with checked_client(acl_broker, "dashboard") as dash, checked_client(acl_broker, "st-south-01") as st:
        await dash.subscribe("reflash/v1/#", qos=1)
        await st.publish_checked(results, b'{"n": 1}', qos=1)
        async with asyncio.timeout(10):
            seen = await anext(aiter(dash.messages))
        assert str(seen.topic) == results
        for where in (results, topic("ack", region="South", station="st-south-01"), "reflash/v1/STATE/x"):
            with pytest.raises(BrokerRefused):
                await dash.publish_checked(where, b"{}", qos=1)


def checked_client(broker: Mosquitto, user: str) -> BrokerClient:
    return BrokerClient(
        "127.0.0.1", broker.port, username=user, password=USERS[user], identifier=f"{user}-{uuid.uuid4()}",
        protocol=aiomqtt.ProtocolVersion.V5,
    )  # fmt: skip


async def test_refusals_are_failures_the_station_sees(
    acl_broker: Mosquitto, store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A station whose config names the wrong region: the ACL denies every publish. Nothing is marked as held by
    the broker, nothing is confirmed, the refusal is logged once and retried with backoff."""
    monkeypatch.setenv("ACL_TEST_PASSWORD", USERS["st-north-01"])
    config = MqttConfig(url=acl_broker.url, username="st-north-01", password_env="ACL_TEST_PASSWORD",
                        republish_after_s=0.2, republish_max_s=0.5)  # fmt: skip
    finish_jobs(store, 1, 3)
    store.import_order(OrderRequest("C-1", "stock", None, "North", [], "c-1.csv", "0" * 64))
    store.close_order("C-1", {}, lambda message_id, closed_at: {"order_ref": "C-1"})
    birth = {"software_version": "test", "facility": "f", "slots": 0}
    reporter = Reporter(store, config, station="st-north-01", region="South", birth=birth)
    task = asyncio.create_task(reporter.run())
    try:
        await eventually(lambda: min(m.refusals for m in store.outbox.messages()) >= 3, what="three tries each")
        assert reporter.connected.is_set()
    finally:
        reporter.stop()
        await task
    assert store.outbox_counts() == {"pending": 4, "at_broker": 0, "confirmed": 0, "rejected": 0}
    errors = {message.last_error or "" for message in store.outbox.messages()}
    assert len(errors) == 2  # one topic for the results, one for the summary
    assert all("0x87 Not authorized" in e for e in errors)
    assert reporter.refused_publishes >= 12
    said = [r.getMessage() for r in caplog.records if "refused by the broker" in r.getMessage()]
    # once for the results, once for the order summary, once for the birth and once for the offline
    assert len([s for s in said if "(hub_result)" in s]) == 1
    assert len([s for s in said if "(order_summary)" in s]) == 1
    assert len([s for s in said if "(status)" in s]) == 1
    assert reporter.describe()["last_refusal"]
    backlog = store.outbox_backlog()
    assert backlog["refused"] == 4
    assert "0x87" in backlog["last_refusal"]


async def test_a_window_of_publishes_says_what_came_of_each(acl_broker: Mosquitto) -> None:
    """publish_window keeps the order, and a refusal is the refused message's alone: the ones around it are taken."""
    own = topic("result", region="North", station="st-north-01")
    other = topic("result", region="North", station="st-north-02")
    station = BrokerClient(
        "127.0.0.1", acl_broker.port, username="st-north-01", password=USERS["st-north-01"],
        identifier=f"st-north-01-{uuid.uuid4()}", protocol=aiomqtt.ProtocolVersion.V5,
    )  # fmt: skip
    messages = [Outgoing(other if n == 37 else own, json.dumps({"n": n}).encode()) for n in range(120)]
    async with client(acl_broker, "dsp-bridge") as bridge, station:
        await bridge.subscribe(own, qos=1)
        outcomes = await station.publish_window(messages, 7)
        assert [n for n, outcome in enumerate(outcomes) if outcome is not None] == [37]
        refusal = outcomes[37]
        assert isinstance(refusal, BrokerRefused)
        assert refusal.code == 0x87
        assert not station._pending_publishes  # every wait settled and forgotten
        received: list[int] = []
        async with asyncio.timeout(10):
            async for message in bridge.messages:
                received.append(json.loads(message.payload)["n"])
                if len(received) == 119:
                    break
    assert received == [n for n in range(120) if n != 37]
