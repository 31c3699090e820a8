"""How much CPU `reflash` costs before it does anything: `--help`, a subcommand's `--help`, and `status`.

    python -m bench.bench_cli_start [--runs 10] [--json]

Each command runs as its own process, `--runs` times; the CPU (user + system) of each child is read with
os.wait4, and the table gives the median. A bare `python -c pass` in the same run is the floor; the command line
that ships with the station is the figure to keep well under a quarter of a second.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFLASH = [sys.executable, "-c", "from station.cli import main; main()"]


def cpu_seconds(argv: list[str], cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(process.pid, 0)
    return usage.ru_utime + usage.ru_stime


def status_fixture(folder: Path) -> Path:
    """A station config and the status file a running station writes, so `status` has something to show."""
    (folder / "state").mkdir(parents=True)
    config = folder / "station.toml"
    config.write_text(
        '[station]\nid = "st-1"\nregion = "North"\noperator = "op-1"\nfacility_approval = "SSC-1"\n'
        'store = "state/station.db"\n[catalog]\nfolder = "catalog"\nauthority_key = "authority.pub"\n'
    )
    status = {
        "station": "st-1", "updated_at": 0, "slots": [],
        "totals": {"hubs": 0, "outcomes": {}, "hubs_per_hour": 0, "bytes_per_s": 0, "uptime_s": 0},
    }  # fmt: skip
    (folder / "state" / "status.json").write_text(json.dumps(status))
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = status_fixture(folder)
        cases = {
            "python -c pass (floor)": [sys.executable, "-c", "pass"],
            "reflash --help": [*REFLASH, "--help"],
            "reflash orders --help": [*REFLASH, "orders", "--help"],
            "reflash catalog --help": [*REFLASH, "catalog", "--help"],
            "reflash jig --help": [*REFLASH, "jig", "--help"],
            "reflash sim --help": [*REFLASH, "sim", "--help"],
            "reflash status --json": [*REFLASH, "status", "--config", str(config), "--json"],
        }
        rows = []
        for name, argv in cases.items():
            samples = [cpu_seconds(argv, folder) for _ in range(args.runs)]
            rows.append({"command": name, "cpu_s_median": round(statistics.median(samples), 3),
                         "cpu_s_min": round(min(samples), 3), "runs": args.runs})  # fmt: skip
    meta = {"date": datetime.now(UTC).isoformat(timespec="minutes"), "machine": platform.machine(),
            "cores": os.cpu_count(), "python": platform.python_version()}  # fmt: skip
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}, indent=2))
        return
    print(f"reflash start-up CPU ({meta['date']}, {meta['machine']}, {meta['cores']} cores, Python {meta['python']})")
    print(f"{'command':<28}{'median CPU s':>14}{'min CPU s':>12}")
    for row in rows:
        print(f"{row['command']:<28}{row['cpu_s_median']:>14}{row['cpu_s_min']:>12}")


if __name__ == "__main__":
    main()
