"""The README's first command: the whole station on a simulated bench, every hub as the scenario expects."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from station.cli import main


def test_demo_runs_the_bench_and_the_smi_agrees(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--workdir", str(workdir), "--json", "--slots", "14"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["as_expected"] is True
    hubs = payload["hubs"]
    assert len(hubs) == 14
    for hub in hubs:
        assert {"chf_id", "gpf_id", "outcome", "reason", "firmware_before", "firmware_after"} <= set(hub)
        assert {"smi_chf_firmware", "smi_gpf_firmware"} <= set(hub)
    outcomes = {hub["outcome"] for hub in hubs}
    assert {"REFLASHED", "ALREADY_CURRENT", "REFUSED", "SCRAP", "UNEXPECTED"} <= outcomes
    # Whatever the outcome, the SMI holds the version the station read from the hub at the end (docs/mqtt-api.md),
    # and that version is what the simulated hub really runs (its own state on disk).
    for hub in hubs:
        assert hub["smi_chf_firmware"] == hub["smi_gpf_firmware"] == hub["firmware_after"], hub
        assert hub["firmware_after"] in (None, hub["hub_running"]), hub
    resumed = next(hub for hub in hubs if "loses power" in hub["name"])
    assert resumed["outcome"] == "REFLASHED"
    # What the demo leaves behind is a working station: its audit trail verifies.
    verify = CliRunner().invoke(main, ["audit", "verify", "--config", str(workdir / "station.toml")])
    assert verify.exit_code == 0, verify.output
    # The bridge's view of the SMI: CHF and GPF rows for every hub whose firmware the station read.
    shown = CliRunner().invoke(main, ["sim", "dsp-bridge", "--db", str(workdir / "smi.db"), "--show", "--json"])
    assert shown.exit_code == 0, shown.output
    known = [h for h in hubs if h["firmware_after"] is not None]
    assert len(known) == len(hubs)  # every demo hub answers at the end of its job
    assert len(json.loads(shown.output)["devices"]) == 2 * len(known)
    # Private keys are generated at run time in the working folder.
    assert (workdir / "keys/authority.key").exists()


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("x")
    result = CliRunner().invoke(main, ["demo", "--workdir", str(tmp_path)])
    assert result.exit_code == 2
    assert (tmp_path / "mine.txt").exists()


def test_no_private_key_is_committed() -> None:
    root = Path(__file__).parents[2]
    for folder in ("config", "tests", "docs", "station", "firmware_catalog", "drivers", "simulators", "bench"):
        for path in (root / folder).rglob("*"):
            if path.is_file() and path.suffix not in {".pyc"}:
                assert not re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\s+MI", path.read_bytes()), path
