"""Issue 10: what the operator reads. The live table fits 80 columns and keeps each slot's name and the end of its
hub's CHF ID; hubs per hour is a whole number over a recent window; the table ends with a summary line; the logs
say a long transfer's progress, say a resumed job is resumed, and never print a Python repr."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from jsonschema import Draft202012Validator
from rich.console import Console

from drivers.jig_driver import JigDriver
from firmware_catalog.catalog import load_catalog
from firmware_catalog.keys import load_public_key
from station import job as job_module
from station.bench import RATE_WINDOW_S, Bench
from station.config import JobSettings, Tariff
from station.demo import DemoWorld, build_demo_world
from station.event_log import event_writer
from station.job import JobContext
from station.live_state import status_schema
from station.orders import OrderRequest
from station.slot import SlotFault
from station.status_view import StatusFile, StatusTable, summary_line
from station.store import Store
from tests.station.conftest import ACTOR, hub_id, import_and_scan_in
from tests.station.test_bench_e2e import HUBS, sim_jig

DOCS = Path(__file__).parents[2] / "docs"
LONG = "transferring: a message long enough to need more than the columns an 80-column terminal has left"


def status(slots: int = 8) -> dict[str, Any]:
    rows = [
        {
            "name": f"BENCH-A{n}", "state": "transferring", "fault": None, "chf_id": f"00-DB-12-34-56-78-{n:02X}-A0",
            "message": LONG, "bytes_done": 300_000, "bytes_total": 1_048_576, "bytes_per_s": 90_000.0, "eta_s": 623.4,
            "last_outcome": "QUARANTINED", "last_reason": "VERSION_NOT_TARGET_AFTER_ACTIVATE",
        }
        for n in range(1, slots + 1)
    ]  # fmt: skip
    totals = {"hubs": 41, "outcomes": {"REFLASHED": 40, "QUARANTINED": 1}, "hubs_per_hour": 212,
              "bytes_per_s": 720_000.0, "uptime_s": 3725.0}  # fmt: skip
    return {"station": "st-north-1", "slots": rows, "totals": totals}


def rendered(data: dict[str, Any], width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    console.print(StatusTable(data))
    return console.export_text().splitlines()


@pytest.mark.parametrize("width", [80, 100])
def test_the_table_fits_the_terminal_and_keeps_slot_and_chf_end(width: int) -> None:
    lines = rendered(status(), width)
    assert max(len(line) for line in lines) <= width
    for n in range(1, 9):
        (row,) = [line for line in lines if f"BENCH-A{n} " in line]
        assert f"…78-{n:02X}-A0" in row  # the end of the ID tells the hubs of one batch apart
        assert "28%" in row
        assert "10m23s" in row  # the time left, as a person reads it
    assert "212 per hour" in "\n".join(lines)


def test_a_wide_terminal_shows_whole_ids_and_messages() -> None:
    lines = rendered(status(2), 320)
    text = "\n".join(lines)
    assert "00-DB-12-34-56-78-01-A0" in text
    assert LONG in text


def test_hubs_per_hour_is_a_whole_number_over_the_recent_window() -> None:
    bench = Bench({}, cast(JobContext, None))
    start = bench.started
    assert bench.hubs_per_hour(start + 10) == 0
    bench._finished_at.extend([start + 5, start + 20])
    # Under a minute counts as a minute: two hubs in 30 s are not 240 an hour.
    assert bench.hubs_per_hour(start + 30) == 120
    # An hour in, only the last RATE_WINDOW_S counts: the two early hubs are out of the window.
    later = start + 3600
    bench._finished_at.extend([later - 100 * n for n in range(5)])
    rate = bench.hubs_per_hour(later)
    assert isinstance(rate, int)
    assert rate == round(5 * 3600 / RATE_WINDOW_S)


def test_the_summary_line_names_totals_and_unfinished_slots() -> None:
    data = status(2)
    data["slots"][1].update(state="held", message="not scanned in to order DCC-7")
    data["slots"][0].update(state="done", message="")
    line = summary_line(data)
    assert line.startswith("Station st-north-1 stopped after 1h02m: 41 hubs (REFLASHED 40, QUARANTINED 1)")
    assert line.endswith("unfinished: BENCH-A2 held (not scanned in to order DCC-7)")


def test_text_log_lines_never_show_a_python_repr(capsys: pytest.CaptureFixture[str]) -> None:
    emit = event_writer("text", quiet=False)
    emit("station_stopped", outcomes={"REFLASHED": 3}, unfinished_slots=["A1"], once=True,
         slots={"A1": {"state": "held", "message": None}})  # fmt: skip
    line = capsys.readouterr().out.strip()
    assert 'outcomes={"REFLASHED":3}' in line
    assert 'unfinished_slots=["A1"]' in line
    assert "once=true" in line
    assert not re.search(r"\{'|\['|None|True|False", line), line


@pytest.fixture
def world(tmp_path: Path) -> DemoWorld:
    return build_demo_world(tmp_path / "world")


async def test_a_long_transfer_is_said_as_it_goes_and_a_resumed_job_as_resumed(
    tmp_path: Path, world: DemoWorld, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = load_catalog(world.catalog_dir, load_public_key(world.authority_pub), datetime.now(UTC))
    monkeypatch.setattr(job_module, "TRANSFER_PROGRESS_EVERY_S", 0.2)
    hub = HUBS[0]
    import_and_scan_in(store, OrderRequest("DCC-VIEW", "dcc", "SUPPLIER-A", "North", [(hub_id(hub.n), 2)],
                                           "view.csv", "0" * 64))  # fmt: skip
    events: list[tuple[str, dict[str, object]]] = []
    bench: Bench | None = None

    def emit(event: str, **fields: object) -> None:
        events.append((event, fields))
        if event == "transfer_progress" and bench is not None:
            bench.stop()  # the operator stops the station mid-transfer

    ctx = JobContext(
        store=store, catalog=lambda: catalog, tariff=Tariff(), station=ACTOR.station, region="North",
        settings=JobSettings(retry_backoff_s=0.05, readback_tries=20, readback_interval_s=0.1), emit=emit,
    )  # fmt: skip
    jig = sim_jig(world, hub, tmp_path / "hubs", baud=115_200)
    bench = Bench({"A1": jig}, ctx)
    await bench.run(once=True)
    await jig.close()
    said = [fields for event, fields in events if event == "transfer_progress"]
    assert said, [event for event, _ in events]
    first = said[0]
    assert (first["slot"], first["chf_id"]) == ("A1", hub_id(hub.n))
    done, total = cast(int, first["bytes_done"]), cast(int, first["bytes_total"])
    assert 0 < done < total
    assert first["percent"] == 100 * done // total
    assert [event for event, _ in events if event.startswith("job_")] == ["job_started"]

    events.clear()
    jig = sim_jig(world, hub, tmp_path / "hubs", baud=3_000_000)
    bench = None
    await Bench({"A1": jig}, ctx).run(once=True)
    await jig.close()
    assert [event for event, _ in events if event.startswith("job_")] == ["job_resumed", "job_finished"]
    (job,) = store.jobs()
    assert (job.outcome, job.firmware_after) == ("REFLASHED", hub.after)


def test_the_status_file_schema_is_generated_from_the_model_and_a_real_file_passes_it(tmp_path: Path) -> None:
    committed = json.loads((DOCS / "status-file.schema.json").read_text())
    assert committed == status_schema(), "stale: run `python -m station.live_state > docs/status-file.schema.json`"
    Draft202012Validator.check_schema(committed)
    bench = Bench(
        {"A1": cast(JigDriver, None), "A2": cast(JigDriver, None)}, cast(JobContext, SimpleNamespace(station="st-1"))
    )
    bench.views["A1"].hub(hub_id(1), hub_id(1001), "DCC-1", "01000000")
    bench.views["A1"].transferring("01020000", 1000)
    bench.views["A1"].progress(500, 1000)
    bench.views["A2"].fail(SlotFault.LINK_FAILED, "link failed: reset by peer")
    status = StatusFile(tmp_path / "status.json")
    status.write(bench.snapshot())
    data = json.loads((tmp_path / "status.json").read_text())
    Draft202012Validator(committed).validate(data)
    assert [(s["name"], s["state"], s["fault"]) for s in data["slots"]] == [
        ("A1", "transferring", None),
        ("A2", "error", "LINK_FAILED"),
    ]
    # `reflash status` reads the same file (it imports neither pydantic nor the daemon).
    assert "A1" in "\n".join(rendered(data, 120))
