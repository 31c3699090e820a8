"""The reporter over TLS with a client certificate and a password from the environment, on a real Mosquitto."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from station.config import MqttConfig
from station.mosquitto import Mosquitto
from station.reporter import Reporter
from station.store import Store
from station.throwaway_ca import ThrowawayCa
from tests.station.conftest import ACTOR

PASSWORD = "s3cret-not-for-logs"


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, Path]]:
    pki = tmp_path / "pki"
    ca = ThrowawayCa(pki)
    for who in ("broker", ACTOR.station):
        ca.issue(who)
    tool = shutil.which("mosquitto_passwd")
    assert tool is not None
    subprocess.run([tool, "-b", "-c", str(pki / "passwd"), ACTOR.station, PASSWORD], check=True)
    broker = Mosquitto(
        tmp_path / "broker",
        extra_conf=(
            f"cafile {pki / 'ca.crt'}\ncertfile {pki / 'broker.crt'}\nkeyfile {pki / 'broker.key'}\n"
            f"require_certificate true\nallow_anonymous false\npassword_file {pki / 'passwd'}\n"
        ),
    )
    broker.start()
    yield broker, pki
    broker.stop()


async def _connects(store: Store, broker: Mosquitto, pki: Path) -> bool:
    config = MqttConfig(
        url=f"mqtts://127.0.0.1:{broker.port}", username=ACTOR.station, password_env="TEST_REFLASH_MQTT_PASSWORD",
        ca=pki / "ca.crt", cert=pki / f"{ACTOR.station}.crt", key=pki / f"{ACTOR.station}.key",
    )  # fmt: skip
    birth = {"software_version": "test", "facility": ACTOR.facility, "slots": 0}
    reporter = Reporter(store, config, station=ACTOR.station, region="North", birth=birth)
    task = asyncio.create_task(reporter.run())
    try:
        async with asyncio.timeout(5):
            await reporter.connected.wait()
        return True
    except TimeoutError:
        return False
    finally:
        reporter.stop()
        await task


async def test_tls_with_client_certificate_and_password_from_environment(
    tls_broker: tuple[Mosquitto, Path], store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broker, pki = tls_broker
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TEST_REFLASH_MQTT_PASSWORD", PASSWORD)
    assert await _connects(store, broker, pki)
    monkeypatch.setenv("TEST_REFLASH_MQTT_PASSWORD", "wrong")
    assert not await _connects(store, broker, pki)
    assert PASSWORD not in caplog.text
