"""Text from a hub is data: never rich markup, never raw control characters, wherever a person sees it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner
from rich.console import Console

from station.cli import main
from station.daemon import render_status
from station.demo import build_demo_world
from station.display_text import display_text
from station.event_log import event_writer
from station.showcase import write_station_config

HOSTILE = "bad [/] [bold red]forged[/bold red] \x1b[2J\x07\r\n\x9b\u202eevil"


def test_display_text_escapes_every_control_character() -> None:
    shown = display_text(HOSTILE)
    assert shown == "bad [/] [bold red]forged[/bold red] \\x1b[2J\\x07\\r\\n\\x9b\\u202eevil"
    assert all(ch.isprintable() for ch in shown)
    assert display_text(None) == ""
    assert display_text("00-DB-12-34-56-78-90-A0 ok") == "00-DB-12-34-56-78-90-A0 ok"


def status_with_hostile_text() -> dict[str, object]:
    slot = {
        "name": "A1", "state": "error", "fault": "PROTOCOL_ERROR", "chf_id": HOSTILE, "message": HOSTILE,
        "bytes_done": 0, "bytes_total": 0, "bytes_per_s": 0.0, "eta_s": None, "last_outcome": "QUARANTINED",
        "last_reason": HOSTILE,
    }  # fmt: skip
    totals = {"hubs": 1, "outcomes": {"QUARANTINED": 1}, "hubs_per_hour": 1.0, "bytes_per_s": 0.0, "uptime_s": 1.0}
    return {"station": "st [/]", "updated_at": time.time(), "slots": [slot], "totals": totals}


def test_the_live_table_shows_hub_text_as_text() -> None:
    console = Console(record=True, width=400, color_system=None)
    console.print(render_status(status_with_hostile_text()))  # `[/]` as markup would raise MarkupError
    out = console.export_text()
    assert "bad [/] [bold red]forged[/bold red] \\x1b[2J" in out
    assert "\x1b" not in out
    assert "\x07" not in out


def test_reflash_status_shows_hub_text_as_text(tmp_path: Path) -> None:
    world = build_demo_world(tmp_path / "world")
    config = write_station_config(world, [world.scenario.filler], broker_url=None)
    status = world.workdir / "state/status.json"
    status.parent.mkdir(parents=True, exist_ok=True)
    status.write_text(json.dumps(status_with_hostile_text()))
    table = CliRunner().invoke(main, ["status", "--config", str(config)])
    assert table.exit_code == 0, table.output
    assert "\\x1b[2J" in table.output
    assert "\x1b" not in table.output
    as_json = CliRunner().invoke(main, ["status", "--config", str(config), "--json"])
    assert as_json.exit_code == 0
    assert json.loads(as_json.output)["slots"][0]["message"] == HOSTILE  # JSON keeps the data exact


def test_text_log_lines_escape_hub_text(capsys: object) -> None:
    event_writer("text", quiet=False)("slot_error", slot="A1", error=HOSTILE)
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert out.count("\n") == 1
    assert "\x1b" not in out
    assert "error=bad [/] [bold red]forged[/bold red] \\x1b[2J" in out
