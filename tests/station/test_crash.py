"""kill -9 the station mid-batch, at several points, and start it again: nothing lost, nothing done twice."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from simulators.dsp_bridge import SmiStore
from station.cli import main
from station.config import load_config
from station.demo import build_demo_world
from station.mosquitto import Mosquitto
from station.orders import read_order_file
from station.showcase import write_order, write_station_config
from tests.station.conftest import import_and_scan_in

SLOTS = 6


def reflash_process(*args: str, watch: bool = False) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "from station.cli import main; main()", *args],
        stdout=subprocess.PIPE if watch else subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def start_station(config: Path, watch: bool = True) -> subprocess.Popen[bytes]:
    return reflash_process("run", "--config", str(config), "--once", "--log-format", "json", "--no-live", watch=watch)


def wait_for_event(
    process: subprocess.Popen[bytes], event: str | tuple[str, ...], within: float = 30.0
) -> dict[str, object]:
    wanted = (event,) if isinstance(event, str) else event
    assert process.stdout is not None
    deadline = time.monotonic() + within
    buffer = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if not ready:
            continue
        chunk = os.read(process.stdout.fileno(), 65536)
        if not chunk:
            break
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            record = json.loads(line)
            if record["event"] in wanted:
                return dict(record)
    raise AssertionError(f"the station never logged {event!r}")


@pytest.mark.parametrize("with_broker", [False, True], ids=["no-broker", "broker-and-bridge"])
def test_sigkill_mid_batch_then_restart(tmp_path: Path, with_broker: bool, mosquitto: Mosquitto) -> None:
    world = build_demo_world(tmp_path / "world")
    hubs = [world.scenario.filler.model_copy(update={"name": f"hub {n}"}) for n in range(SLOTS)]
    # Slow links (115200 baud, 96 KiB images: about 9 s each) so the kills land mid-transfer.
    broker_url = mosquitto.url if with_broker else None
    config_path = write_station_config(world, hubs, broker_url=broker_url, baud=115_200)
    bridge = None
    if with_broker:
        bridge = reflash_process("sim", "dsp-bridge", "--broker", mosquitto.url, "--db", str(tmp_path / "smi.db"))
    config = load_config(config_path)
    store = config.open_store()
    import_and_scan_in(store, read_order_file(write_order(world, hubs)))
    store.close()

    kills = 0
    for delay in (0.3, 1.5, 2.5):
        process = start_station(config_path)
        try:
            wait_for_event(process, ("job_started", "job_resumed"))  # a restart resumes what the kill interrupted
            time.sleep(delay)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            assert process.stdout is not None
            process.stdout.close()
        kills += 1

    final = start_station(config_path, watch=False)
    try:
        assert final.wait(120) == 0
    finally:
        final.kill()

    store = config.open_store()
    jobs = store.jobs()
    assert len(jobs) == SLOTS, "a restarted job must be resumed, not started again"
    assert all(job.state == "final" and job.outcome == "REFLASHED" for job in jobs)
    interrupted = len([a for a in store.job_ledger.attempts() if a.result == "interrupted"])
    assert interrupted >= SLOTS  # every kill left each running transfer interrupted, recorded at the next start
    resumed = [a.detail or "" for a in store.job_ledger.attempts() if a.result == "ok"]
    assert any("resumed from 0," not in detail for detail in resumed), resumed
    assert len(store.outbox.messages(kind="hub_result")) == SLOTS
    assert len(store.job_ledger.charges()) == SLOTS
    kinds = [entry.kind for entry in store.audit_entries()]
    assert kinds.count("station_started") == kills + 1
    store.close()
    verify = CliRunner().invoke(main, ["audit", "verify", "--config", str(config_path)])
    assert verify.exit_code == 0, verify.output
    if bridge is not None:
        # Every result reached the SMI exactly once, through the kills (the last run waits for the DSP's acks).
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(10)
        smi = SmiStore(tmp_path / "smi.db")
        assert smi.applied_count() == SLOTS
        assert len(smi.devices()) == 2 * SLOTS
        smi.close()
        store = config.open_store()
        assert store.outbox_counts()["confirmed"] == SLOTS
        store.close()


def test_sigterm_drains_and_records_interrupted_never_done(tmp_path: Path) -> None:
    world = build_demo_world(tmp_path / "world")
    hubs = [world.scenario.filler.model_copy(update={"name": f"hub {n}"}) for n in range(2)]
    config_path = write_station_config(world, hubs, broker_url=None, baud=115_200)
    config = load_config(config_path)
    store = config.open_store()
    import_and_scan_in(store, read_order_file(write_order(world, hubs)))
    store.close()
    process = start_station(config_path)
    try:
        wait_for_event(process, "job_started")
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 1  # stopped before every hub had an outcome
    finally:
        process.kill()
        assert process.stdout is not None
        process.stdout.close()
    store = config.open_store()
    jobs = store.jobs()
    assert jobs
    assert {job.state for job in jobs} == {"interrupted"}
    assert all(job.outcome is None for job in jobs)
    kinds = [entry.kind for entry in store.audit_entries()]
    assert kinds[-1] == "station_stopped"
    assert "job_interrupted" in kinds
    assert store.audit_checkpoints()[-1].seq == len(kinds)  # the tail is signed at shutdown
    store.close()
