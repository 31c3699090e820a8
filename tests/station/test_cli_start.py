"""`reflash` starts fast: the listing of subcommands imports none of them, and each subcommand imports what it uses.

Speed itself is measured by bench/bench_cli_start.py (never by a timed test); this test pins what makes it fast.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from station.cli import COMMANDS, main

HEAVY = ("cryptography", "construct", "aiomqtt", "paho", "pydantic", "rich", "jsonschema", "serial", "usb")


def modules_loaded_by(*args: str) -> list[str]:
    code = (
        "import json, sys\n"
        "from station.cli import main\n"
        "try:\n"
        f"    main({list(args)!r}, standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return loaded


def test_the_listing_imports_no_subcommand_and_no_heavy_library() -> None:
    loaded = modules_loaded_by("--help")
    ours = [m for m in loaded if m.split(".")[0] in ("station", "drivers", "firmware_catalog", "simulators")]
    assert ours == ["station", "station.cli"]
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []


def test_the_listing_shows_each_commands_own_short_help() -> None:
    for name, (module, attribute, short) in COMMANDS.items():
        command = getattr(importlib.import_module(module), attribute)
        assert short == command.get_short_help_str(limit=80), name
    listing = CliRunner().invoke(main, ["--help"])
    assert listing.exit_code == 0
    for name in COMMANDS:
        assert f"  {name} " in listing.output


def test_a_subcommand_still_runs() -> None:
    done = CliRunner().invoke(main, ["catalog", "--help"])
    assert done.exit_code == 0
    assert "keygen" in done.output
    assert CliRunner().invoke(main, ["nope"]).exit_code == 2


def test_the_state_dir_variable_is_named_once_in_effect() -> None:
    from station.cli.station_options import STATE_DIR_ENV as said_in_help
    from station.pin_folder import STATE_DIR_ENV as read

    assert said_in_help == read


def test_status_reads_its_file_without_the_daemon_the_store_or_the_config_models(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    config = tmp_path / "station.toml"
    config.write_text('[station]\nid = "st-1"\n')
    status = {"station": "st-1", "updated_at": 0, "slots": [],
              "totals": {"hubs": 0, "outcomes": {}, "hubs_per_hour": 0, "bytes_per_s": 0, "uptime_s": 0}}  # fmt: skip
    (tmp_path / "state" / "status.json").write_text(json.dumps(status))
    loaded = modules_loaded_by("status", "--config", str(config), "--json")
    assert not {"station.daemon", "station.store", "station.config", "station.reporter"} & set(loaded)
    assert [m for m in loaded if m.split(".")[0] in ("cryptography", "pydantic", "aiomqtt", "construct")] == []


def test_the_default_store_is_said_once_in_effect() -> None:
    from station.config import StationSection
    from station.status_view import DEFAULT_STORE

    assert StationSection.model_fields["store"].default == Path(DEFAULT_STORE)
