"""Stop the station at every phase of a job, by SIGKILL (a power cut) and by SIGTERM (the documented drain), then
start it again: the hub ends with exactly one final outcome, the outcome is true of what the hub runs, and the
DSP's SMI rows hold the version the hub runs.

The station stops itself at a named point (`station/crash_point.py`): timing a signal from outside cannot land
inside the outcome transaction or between the hub's activation and its read-back reliably. The hub's truth is read
from its own state on disk, which the station never writes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from simulators.dsp_bridge import SmiStore
from station.cli import main
from station.config import load_config
from station.crash_point import ENV
from station.demo import DemoWorld, build_demo_world, device_id
from station.mosquitto import Mosquitto
from station.orders import read_order_file
from station.showcase import hub_running_version, write_order, write_station_config
from tests.station.conftest import import_and_scan_in

# Each phase of a job, in order, as the crash point that stops the station there.
PHASES = {
    "decide": "after:decision",
    "transfer": "transfer_half",
    "verify": "after:verified",
    "prove": "after:proof",
    "activate-sent": "activating",
    "activated": "after:activate",
    "read-back": "after:read_back",
    "outcome-transaction": "during:job_finished",
    "outcome-committed": "after:job_finished",
    "publishing": "after:published",
}
TARGET = "01020000"
# The stops after which the hub already runs the target while the job has no outcome: the restarted job must take
# the resumed-after-activation path (proof of the running image), never decide afresh from the new version.
RESUMED_AFTER_ACTIVATION = {("activated", "KILL"), ("activated", "TERM"), ("read-back", "KILL"),
                            ("read-back", "TERM"), ("outcome-transaction", "KILL")}  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> DemoWorld:
    return build_demo_world(tmp_path_factory.mktemp("crash-phases") / "world")


@pytest.fixture(scope="module")
def dsp(world: DemoWorld) -> Iterator[tuple[str, Path]]:
    """One broker and one DSP bridge for every case; each case has hubs (device IDs) of its own."""
    with Mosquitto(world.workdir / "mosquitto") as broker:
        smi = world.workdir / "smi.db"
        bridge = subprocess.Popen(
            [sys.executable, "-c", "from station.cli import main; main()", "sim", "dsp-bridge",
             "--broker", broker.url, "--db", str(smi)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            yield broker.url, smi
        finally:
            bridge.send_signal(signal.SIGTERM)
            bridge.wait(10)


def run_station(config: Path, crash: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if crash is not None:
        env[ENV] = crash
    return subprocess.run(
        [sys.executable, "-c", "from station.cli import main; main()", "run", "--config", str(config), "--once",
         "--log-format", "json", "--no-live"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


CASES = [(phase, sig) for phase in PHASES for sig in ("KILL", "TERM")]


@pytest.mark.parametrize(("phase", "sig"), CASES, ids=[f"{p}-{s}" for p, s in CASES])
def test_a_stop_at_any_phase_resumes_to_the_truth(
    world: DemoWorld, dsp: tuple[str, Path], phase: str, sig: str
) -> None:
    broker_url, smi_path = dsp
    number = 100 + CASES.index((phase, sig))
    name = f"st-{phase}-{sig}"
    hubs = [world.scenario.filler.model_copy(update={"name": name})]
    config_path = write_station_config(world, hubs, broker_url, baud=3_000_000, first=number, name=name)
    config = load_config(config_path)
    store = config.open_store()
    import_and_scan_in(store, read_order_file(write_order(world, hubs, first=number, name=name)))
    store.close()

    point = PHASES[phase]
    stopped = run_station(config_path, f"{point}={sig}")
    assert f"crash point {point}: SIG{sig}" in stopped.stderr, stopped.stderr[-2000:]
    if sig == "KILL":
        assert stopped.returncode == -signal.SIGKILL
    again = run_station(config_path)
    assert again.returncode == 0, again.stderr[-2000:] + again.stdout[-2000:]

    chf, gpf = device_id(number, 1), device_id(number, 2)
    running = hub_running_version(world.workdir / "hubs" / f"S{number:02d}", "01000000")
    assert running == TARGET  # the normal hub really was re-flashed in the end
    store = config.open_store()
    try:
        jobs = store.jobs(chf_id=chf)
        assert len(jobs) == 1, "a stopped job is resumed, never started twice"
        (job,) = jobs
        assert (job.state, job.outcome, job.reason) == ("final", "REFLASHED", "REFLASHED")
        assert job.firmware_before == "01000000"
        assert job.firmware_after == running
        charges = [charge for charge in store.job_ledger.charges() if charge.chf_id == chf]
        assert [(charge.outcome, charge.amount_pence) for charge in charges] == [("REFLASHED", 980)]
        assert store.outbox_counts() == {"pending": 0, "at_broker": 0, "confirmed": 1, "rejected": 0}
        kinds = [entry.kind for entry in store.audit_entries()]
        assert ("resumed_after_activation" in kinds) == ((phase, sig) in RESUMED_AFTER_ACTIVATION), kinds
    finally:
        store.close()
    verify = CliRunner().invoke(main, ["audit", "verify", "--config", str(config_path)])
    assert verify.exit_code == 0, verify.output

    assert smi_rows(smi_path, chf, gpf) == (running, running)


def smi_rows(smi_path: Path, chf: str, gpf: str) -> tuple[str | None, str | None]:
    deadline = time.monotonic() + 10
    while True:
        smi = SmiStore(smi_path)
        rows = {row["device_id"]: row["firmware_version"] for row in smi.devices()}
        smi.close()
        if chf in rows or time.monotonic() > deadline:
            return rows.get(chf), rows.get(gpf)
        time.sleep(0.1)


def test_a_hub_that_finishes_activating_after_the_station_died(
    world: DemoWorld, dsp: tuple[str, Path], tmp_path: Path
) -> None:
    """A real hub (its own process, over TCP) drops the link as it reboots into the new image; the station is killed
    before it can ask what runs. Restarted, the station proves the hub runs the target and reports REFLASHED."""
    broker_url, smi_path = dsp
    number = 90
    chf, gpf = device_id(number, 1), device_id(number, 2)
    state = tmp_path / "hub"
    hub = subprocess.Popen(
        [sys.executable, "-c", "from station.cli import main; main()", "sim", "hub", "--tcp", "127.0.0.1:0",
         "--chf-id", chf, "--gpf-id", gpf, "--trust", f"121D={world.key('maker-121D.pub')}", "--baud", "3000000",
         "--fault", "activate-then-drop", "--state", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert hub.stdout is not None
        url = hub.stdout.readline().strip()
        assert url.startswith("tcp://"), url
        config_path = world.workdir / "st-tcp-hub.toml"
        config_path.write_text(
            "\n".join([
                "[station]", 'id = "st-tcp-hub"', 'region = "North"', 'operator = "op-1"',
                'facility_approval = "SSC-1"', 'store = "state/st-tcp-hub.db"', 'key = "keys/station.key"', "",
                "[catalog]", 'folder = "catalog"', 'authority_key = "keys/authority.pub"', "",
                "[tariff]", 'REFLASHED = "9.80"', "",
                "[mqtt]", f'url = "{broker_url}"', "",
                "[[slots]]", 'name = "T1"', 'driver = "tcp"', f'url = "{url}"', "",
            ])
        )  # fmt: skip
        config = load_config(config_path)
        store = config.open_store()
        order = world.workdir / "st-tcp-hub.csv"
        order.write_text(f"order_ref,requesting_party,csp_region,chf_id\nDCC-TCP,SUPPLIER,North,{chf}\n")
        import_and_scan_in(store, read_order_file(order))
        store.close()

        stopped = run_station(config_path, "after:activate=KILL")
        assert "crash point after:activate: SIGKILL" in stopped.stderr, stopped.stderr[-2000:]
        again = run_station(config_path)
        assert again.returncode == 0, again.stderr[-2000:] + again.stdout[-2000:]
    finally:
        hub.send_signal(signal.SIGTERM)
        hub.wait(10)
        if hub.stdout is not None:
            hub.stdout.close()
    running = hub_running_version(state, "01000000")
    assert running == TARGET
    store = config.open_store()
    try:
        (job,) = store.jobs(chf_id=chf)
        assert (job.outcome, job.reason, job.firmware_after) == ("REFLASHED", "REFLASHED", TARGET)
        (activate,) = [e.data for e in store.audit_entries() if e.kind == "activate"]
        assert activate["code"] is None  # the answer never came
        assert [e for e in store.audit_entries() if e.kind == "resumed_after_activation"]
    finally:
        store.close()
    assert smi_rows(smi_path, chf, gpf) == (TARGET, TARGET)
