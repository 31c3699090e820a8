"""The README's first command: every example hub gets the decision the scenario expects."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from firmware_catalog.reason import ReasonCode
from station.cli import main
from station.demo import run_catalog_demo


def test_catalog_demo_decides_as_expected(tmp_path: Path) -> None:
    results = run_catalog_demo(tmp_path / "demo")
    assert results
    for result in results:
        assert result.as_expected, (result.hub.name, result.decision.code, result.decision.message)
    codes = {r.decision.code for r in results}
    assert {ReasonCode.OK, ReasonCode.ALREADY_CURRENT, ReasonCode.UNTRUSTED_KEY, ReasonCode.KEY_REVOKED} <= codes
    # The keys are generated in the working folder at run time.
    assert len(list((tmp_path / "demo/keys").glob("*.key"))) == 5


def test_no_private_key_is_committed() -> None:
    root = Path(__file__).parents[2]
    for folder in ("config", "tests", "docs", "station", "firmware_catalog", "drivers", "simulators", "bench"):
        for path in (root / folder).rglob("*"):
            if path.is_file() and path.suffix not in {".pyc"}:
                assert not re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\s+MI", path.read_bytes()), path


def test_demo_command_json_and_rerun(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    for _ in range(2):  # a second run replaces the first working folder
        result = CliRunner().invoke(main, ["demo", "--workdir", str(workdir), "--json"])
        assert result.exit_code == 0, result.output
        payload = json.loads(result.output)
        assert payload["as_expected"] is True
        assert len(payload["hubs"]) == 11


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("x")
    result = CliRunner().invoke(main, ["demo", "--workdir", str(tmp_path)])
    assert result.exit_code == 2
    assert (tmp_path / "mine.txt").exists()
