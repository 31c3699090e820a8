"""docs/station.md says what the code does: the job reason codes and their outcomes."""

from __future__ import annotations

import re
from pathlib import Path

from station.event_log import Event
from station.outcome import JOB_REASONS, Outcome

DOC = Path(__file__).parents[2] / "docs" / "station.md"


def test_job_reason_table_matches_the_code() -> None:
    lines = DOC.read_text().splitlines()
    start = lines.index("| code | outcome | when |")
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    assert [(r[0].strip("`"), r[1], r[2]) for r in rows] == [
        (code.value, outcome.value, meaning) for code, (outcome, meaning) in JOB_REASONS.items()
    ]


def test_example_station_config_loads() -> None:
    from station.config import load_config

    config = load_config(Path(__file__).parents[2] / "config" / "station.example.toml")
    assert config.station.operator
    assert config.mqtt is not None
    assert [slot.driver for slot in config.slots] == ["serial", "usb", "tcp"]
    assert config.tariff.pence(Outcome.REFLASHED) == 980
    from station.config import JobSettings

    assert config.job == JobSettings()  # the example shows the defaults


def test_interruption_table_matches_the_code() -> None:
    from station.outcome import INTERRUPTIONS

    lines = DOC.read_text().splitlines()
    start = lines.index("| interruption | when |")
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    assert [(r[0].strip("`"), r[1]) for r in rows] == [(code.value, meaning) for code, meaning in INTERRUPTIONS.items()]


def test_the_event_list_in_the_docs_is_the_code() -> None:
    text = DOC.read_text()
    start = text.index("Events:")
    paragraph = text[start : text.index("\n\n", start)]
    named = set(re.findall(r"`([a-z_]+)`", paragraph)) - {
        "bytes_done",
        "bytes_total",
        "percent",
        "bytes_per_s",
        "eta_s",
    }
    assert named == {event.value for event in Event}
