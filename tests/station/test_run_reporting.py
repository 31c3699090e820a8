"""`reflash run --once` and `reflash status` tell the operator about the broker and the outbox."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from station.demo import build_demo_world, device_id
from station.mosquitto import Mosquitto, free_port
from tests.station.test_slot_faults import HONEST, Bench, Events, import_order

EXIT_UNCONFIRMED = 3


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    b = Bench(build_demo_world(tmp_path / "world"))
    yield b
    b.close()


def reflash_status(config: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", "from station.cli import main; main()", "status", "--config", str(config), "--json"],
        capture_output=True, check=True,
    )  # fmt: skip
    data: dict[str, object] = json.loads(done.stdout)
    return data


def test_once_with_the_broker_down_says_so_and_exits_3(bench: Bench) -> None:
    bench.hub("H", 1, HONEST)
    config = bench.config(broker_url=f"mqtt://127.0.0.1:{free_port()}")  # nothing listens there
    import_order(config, [device_id(1, 1)])
    process = bench.station(config, "--once")
    events = Events(process)
    try:
        assert process.wait(60) == EXIT_UNCONFIRMED
    finally:
        process.kill()
    events.rest(1.0)
    unconfirmed = events.wait_for("results_unconfirmed")
    assert (unconfirmed["pending"], unconfirmed["broker_connected"]) == (1, False)
    assert process.stderr is not None
    stderr = process.stderr.read().decode().splitlines()
    assert stderr  # the wait for the broker and the unconfirmed result are said
    assert all(json.loads(line)["event"] == "log" for line in stderr)  # --log-format json: every line is JSON
    status = reflash_status(config)
    reporting = status["reporting"]
    assert isinstance(reporting, dict)
    assert reporting["broker"]["connected"] is False
    assert reporting["broker"]["last_error"]
    assert reporting["outbox"]["pending"] == 1
    assert reporting["outbox"]["oldest_unconfirmed_age_s"] is not None
    assert status["running"] is False


def test_once_with_a_broker_and_a_bridge_confirms_and_status_shows_the_link(bench: Bench, tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker") as broker:
        bridge = subprocess.Popen(
            [sys.executable, "-c", "from station.cli import main; main()", "sim", "dsp-bridge", "--broker",
             broker.url, "--db", str(tmp_path / "smi.db")],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            bench.hub("H", 1, HONEST)
            config = bench.config(broker_url=broker.url)
            import_order(config, [device_id(1, 1)])
            process = bench.station(config, "--once")
            assert process.wait(90) == 0
            status = reflash_status(config)
        finally:
            bridge.terminate()
            bridge.wait(10)
    reporting = status["reporting"]
    assert isinstance(reporting, dict)
    assert reporting["bridge_online"] is True
    assert reporting["outbox"]["confirmed"] == 1
    assert reporting["outbox"]["pending"] == 0
    assert reporting["outbox"]["last_dsp_ack_at"]
    assert reporting["broker"]["client_id"].startswith("reflash-station-")
