"""A running station with its bench page: `reflash run` as a process over simulated TCP hubs (the `Bench` harness
of tests/station/test_slot_faults.py), its page on a free loopback port, operators added with `reflash operators
add` and an order imported (not scanned in: the tests scan in through the page or the API)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from station.config import load_config
from station.demo import build_demo_world, device_id
from station.orders import OrderRequest
from tests.station.test_slot_faults import HONEST, Bench, Events

ORDER = "DCC-PAGE-1"
PINS = {"olive": "2468", "sam": "135790"}  # olive: operator; sam: supervisor
# A model the catalog does not know: refused with UNKNOWN_MODEL, its reason shown in words.
UNKNOWN = {"manufacturer": "121D", "model": "7777", "hardware": "1200", "firmware": "01000000"}
SLOW = "115200"  # the honest hub's line: slow enough to watch its progress move


def reflash(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from station.cli import main; main()", *args, "--config", str(config)],
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@dataclass
class PageStation:
    bench: Bench
    config: Path
    process: subprocess.Popen[bytes]
    events: Events
    url: str

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)


def start_station(
    bench: Bench, *, baud: str = SLOW, refused_hub: bool = True, web: str = "", listen: str = "127.0.0.1:0"
) -> PageStation:
    bench.hub("H", 1, {**HONEST, "baud": baud})
    if refused_hub:
        bench.hub("R", 2, UNKNOWN)
    config = bench.config()
    config.write_text(config.read_text() + f'\n[web]\nlisten = "{listen}"\n{web}')
    store = load_config(config).open_store()
    hubs = [(device_id(1, 1), 2), (device_id(2, 1), 3), (device_id(3, 1), 4)]
    store.import_order(OrderRequest(ORDER, "dcc", "SUPPLIER-A", "North", hubs, "page.csv", "0" * 64))
    assert store.receive(ORDER, device_id(2, 1))  # the refused hub is scanned in; the honest one waits for the page
    store.close()
    for who, role in (("olive", "operator"), ("sam", "supervisor")):
        pin = PINS[who]
        added = reflash(config, "operators", "add", who, "--role", role, stdin=f"{pin}\n{pin}\n")
        assert added.returncode == 0, added.stderr
    process = bench.station(config)
    events = Events(process)
    url = str(events.wait_for("web_listening", within=30)["url"])
    return PageStation(bench, config, process, events, url.rstrip("/"))


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    b = Bench(build_demo_world(tmp_path / "world"))
    yield b
    b.close()
