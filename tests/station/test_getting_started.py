"""docs/getting-started.md works when pasted: every shell block, in order, in one bash, from an empty folder.

The only change made to the text is the ports (1883 for the broker, 17001 and up for the bench), swapped for free
ones so that the test does not depend on what else runs on the machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from station.mosquitto import free_port

DOC = Path(__file__).parents[2] / "docs" / "getting-started.md"
ROOT = Path(__file__).parents[2]


def script() -> str:
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 10
    return "\n".join(blocks)


def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    mosquitto = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if mosquitto is None:
        pytest.skip("Mosquitto is not installed (make broker installs it)")
    broker, bench = free_port(), free_port()
    while bench + 1 == broker:
        bench = free_port()
    text = script().replace("1883", str(broker)).replace("--port-base 17001", f"--port-base {bench}")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{Path(mosquitto).parent}:{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),  # `reflash` runs this checkout's code
    }
    env.pop("REFLASH_CONFIG", None)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", text], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folder = tmp_path / "my-station"
    report = json.loads((folder / "reports" / "DCC-0001.json").read_text())
    assert report["state"] == "closed"
    assert [hub["outcome"] for hub in report["hubs"]] == ["REFLASHED", "REFLASHED"]
    assert "audit trail intact" in done.stdout
    shown = done.stdout[done.stdout.index("SMI (") :]
    assert shown.count("01020000") == 4  # CHF and GPF rows of both hubs hold the new firmware
