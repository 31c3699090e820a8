"""config/mosquitto.acl on a real Mosquitto: a station publishes only under its own topics."""

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

from station.messages import topic
from station.mosquitto import Mosquitto

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
