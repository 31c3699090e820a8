"""Issue 10: custody is enforced as docs/station.md says. A hub an open order names is flashed only once it was
scanned in to that order (`[station] require_scan_in`, default true): until then it is held on its slot, untouched,
without a job, said once, and nothing about it reaches the DSP. Each test runs `reflash run` as a process over a real
TCP link to a simulated hub in a process of its own."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from station.config import load_config
from station.demo import device_id
from station.orders import OrderRequest
from station.showcase import hub_running_version
from tests.station import test_slot_faults
from tests.station.test_slot_faults import HONEST, HONEST_TARGET, Bench, Events, honest_reflashed, stopped_slots

ORDER = "DCC-CUSTODY"
bench = test_slot_faults.bench  # the fixture: simulated hubs over TCP, each in a process of its own


def import_without_scan_in(config: Path, chf_ids: list[str]) -> None:
    store = load_config(config).open_store()
    lines = [(chf, i + 2) for i, chf in enumerate(chf_ids)]
    store.import_order(OrderRequest(ORDER, "dcc", "SUPPLIER-A", "North", lines, "custody.csv", "0" * 64))
    store.close()


def audit_kinds(config: Path) -> list[str]:
    store = load_config(config).open_store()
    try:
        return [entry.kind for entry in store.audit_entries()]
    finally:
        store.close()


def jobs_of(config: Path) -> list[object]:
    store = load_config(config).open_store()
    try:
        return list(store.jobs())
    finally:
        store.close()


def test_a_hub_not_scanned_in_is_held_untouched_until_it_is(bench: Bench) -> None:
    bench.hub("H", 1, HONEST)
    config = bench.config()
    chf_id = device_id(1, 1)
    import_without_scan_in(config, [chf_id])
    process = bench.station(config)
    events = Events(process)
    try:
        held = events.wait_for("hub_not_scanned_in", slot="H")
        assert (held["chf_id"], held["order_ref"]) == (chf_id, ORDER)
        time.sleep(2.0)  # several polls of the slot: the hold is said and recorded once, not every poll
        events.rest(0.5)
        assert [e["event"] for e in events.seen].count("hub_not_scanned_in") == 1
        assert jobs_of(config) == []  # no job, no decision, not a byte sent
        assert hub_running_version(bench.world.workdir / "hubs/H", HONEST["firmware"]) == HONEST["firmware"]

        scan = subprocess.run(
            [sys.executable, "-c", "from station.cli import main; main()", "orders", "receive", ORDER, chf_id,
             "--config", str(config)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert scan.returncode == 0, scan.stderr
        finished = events.wait_for("job_finished", within=90, chf_id=chf_id)
        assert finished["outcome"] == "REFLASHED"
    finally:
        process.terminate()
        process.wait(10)
    events.rest(1.0)
    honest_reflashed(bench, config)
    kinds = audit_kinds(config)
    assert kinds.count("hub_not_scanned_in") == 1
    # Custody before the job: the scan-in is recorded before the job starts.
    assert kinds.index("hub_not_scanned_in") < kinds.index("hub_received") < kinds.index("job_started")


def test_once_ends_a_held_slot_as_unfinished(bench: Bench) -> None:
    bench.hub("H", 1, HONEST)
    config = bench.config()
    import_without_scan_in(config, [device_id(1, 1)])
    process = bench.station(config, "--once")
    events = Events(process)
    try:
        assert process.wait(60) == 1
    finally:
        process.kill()
    events.rest(1.0)
    slots = stopped_slots(events)
    assert slots["H"]["state"] == "held"
    assert "not scanned in to order DCC-CUSTODY" in str(slots["H"]["message"])
    assert jobs_of(config) == []
    assert hub_running_version(bench.world.workdir / "hubs/H", HONEST["firmware"]) == HONEST["firmware"]


def test_a_site_that_records_goods_in_elsewhere_may_turn_it_off(bench: Bench) -> None:
    bench.hub("H", 1, HONEST)
    config = bench.config()
    text = config.read_text()
    config.write_text(text.replace("[station]\n", "[station]\nrequire_scan_in = false\n", 1))
    assert load_config(config).station.require_scan_in is False
    import_without_scan_in(config, [device_id(1, 1)])
    process = bench.station(config, "--once")
    events = Events(process)
    try:
        assert process.wait(90) == 0
    finally:
        process.kill()
    events.rest(1.0)
    honest_reflashed(bench, config)
    assert hub_running_version(bench.world.workdir / "hubs/H", HONEST["firmware"]) == HONEST_TARGET
    assert "hub_not_scanned_in" not in audit_kinds(config)
