"""The SMI holds each hub's newest result, whatever order two bridges sharing its database apply results in: the
order a shared subscription and republishing cannot keep (docs/mqtt-api.md, "Ordering")."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

from simulators.dsp_bridge import SmiStore

CHF, GPF = "00-DB-12-00-00-00-00-01", "00-DB-12-01-00-00-00-01"


def result(station: str, sequence: int, finished_at: str, after: str, outcome: str = "REFLASHED") -> dict[str, Any]:
    return {"message_id": str(uuid.uuid4()), "station": station, "sequence": sequence, "chf_id": CHF, "gpf_id": GPF,
            "manufacturer": "121D", "model": "0000", "outcome": outcome, "firmware_after": after,
            "finished_at": finished_at}  # fmt: skip


def versions(smi: SmiStore) -> dict[str, str]:
    return {row["device_id"]: row["firmware_version"] for row in smi.devices()}


def test_a_late_older_result_does_not_undo_a_newer_one(tmp_path: Path) -> None:
    one, two = SmiStore(tmp_path / "smi.db"), SmiStore(tmp_path / "smi.db")  # two bridges, one SMI
    failed = result("st-a", 7, "2026-12-06T10:00:00.000Z", "01000000", outcome="FAILED")
    retried = result("st-a", 8, "2026-12-06T10:05:00.000Z", "01020000")
    assert two.apply([retried]) == ["applied"]
    assert one.apply([failed]) == ["applied"]  # taken into account (acked), but older: the row stays
    assert versions(one) == {CHF: "01020000", GPF: "01020000"}
    # The same station's sequence decides even when its clock went back between the two jobs.
    assert one.apply([result("st-a", 9, "2026-12-06T09:00:00.000Z", "01030000")]) == ["applied"]
    assert versions(two) == {CHF: "01030000", GPF: "01030000"}


def test_across_stations_the_later_finish_wins(tmp_path: Path) -> None:
    smi = SmiStore(tmp_path / "smi.db")
    smi.apply([result("st-b", 1, "2026-12-06T11:00:00.000Z", "01030000")])
    smi.apply([result("st-a", 50, "2026-12-06T10:00:00.000Z", "01020000")])
    assert versions(smi)[CHF] == "01030000"
    smi.apply([result("st-a", 51, "2026-12-06T12:00:00.000Z", "01040000")])
    assert versions(smi)[CHF] == "01040000"


def test_an_smi_from_before_takes_the_next_result(tmp_path: Path) -> None:
    """A database made before the rows knew their result: the columns are added, and the next result applies."""
    db = sqlite3.connect(tmp_path / "smi.db")
    db.execute(
        "CREATE TABLE smi_devices (device_id TEXT PRIMARY KEY, device_type TEXT NOT NULL, chf_id TEXT NOT NULL, "
        "manufacturer TEXT, model TEXT, firmware_version TEXT, updated_at TEXT NOT NULL, message_id TEXT NOT NULL)"
    )
    db.execute("INSERT INTO smi_devices VALUES (?, 'CHF', ?, '121D', '0000', '01000000', 'then', 'm0')", (CHF, CHF))
    db.commit()
    db.close()
    smi = SmiStore(tmp_path / "smi.db")
    smi.apply([result("st-a", 1, "2026-12-06T10:00:00.000Z", "01020000")])
    assert versions(smi) == {CHF: "01020000", GPF: "01020000"}


def test_finish_times_compare_as_instants_not_as_text(tmp_path: Path) -> None:
    """The contract allows any offset and precision: as text, `10:00:01Z` sorts after `10:00:01.500Z` and
    `10:30:00+01:00` after `10:00:00Z`; as instants, neither is later."""
    smi = SmiStore(tmp_path / "smi.db")
    smi.apply([result("st-a", 1, "2026-12-06T10:00:01.500Z", "01030000")])
    smi.apply([result("st-b", 1, "2026-12-06T10:00:01Z", "01020000")])  # half a second earlier
    assert versions(smi)[CHF] == "01030000"
    smi.apply([result("st-c", 1, "2026-12-06T10:30:00+01:00", "01010000")])  # 09:30 UTC
    assert versions(smi)[CHF] == "01030000"
    smi.apply([result("st-c", 2, "2026-12-06T11:30:00+01:00", "01040000")])  # 10:30 UTC
    assert versions(smi)[CHF] == "01040000"
