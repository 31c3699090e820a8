"""A bench of N simulated hubs at 921600 baud: hubs per hour, link efficiency, station CPU per MiB moved.

    python -m bench.bench_scale [--slots 1,8,32,64] [--image-kib 256] [--baud 921600] [--json]

Each case runs the simulated hubs in a process of their own (`reflash sim bench`, TCP, each hub behind an emulated
UART paced at baud/10 bytes per second with 1 ms latency each way) and the station in another (`reflash run
--once`), so that the station's CPU is measured alone (os.wait4 on its process). The image is random, so
compression does not help: the figure is the link's.

- hubs/h: hubs finished per hour of wall time for the whole batch (identify to outcome)
- efficiency: image bytes / (transfer seconds x baud/10), averaged over the hubs (as in bench/link_efficiency.py)
- station CPU s/MiB: station process CPU seconds per MiB of image delivered
- station cores: station CPU seconds / wall seconds (below 1.0 means less than one core)

The simple way, stop-and-wait (window 1), runs on 8 slots for comparison.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.process_cpu import tree_cpu_seconds
from firmware_catalog.catalog_source import build_catalog
from firmware_catalog.hub import format_eui64
from firmware_catalog.image import build_signed_image
from firmware_catalog.keys import generate_key, write_keypair
from station.config import load_config
from station.orders import OrderRequest
from station.outcome import Outcome

REFLASH = [sys.executable, "-c", "from station.cli import main; main()"]


def make_world(root: Path, image_size: int) -> None:
    (root / "keys").mkdir(parents=True)
    authority, maker = generate_key(), generate_key()
    write_keypair(authority, root / "keys/authority")
    write_keypair(maker, root / "keys/maker")
    body = os.urandom(image_size)
    image = build_signed_image(
        maker, manufacturer=0x121D, image_type=0, file_version=0x01020000, min_hardware_version=0x1111,
        max_hardware_version=0x1211, manufacturer_image=body,
    )  # fmt: skip
    (root / "image.bin").write_bytes(image)
    (root / "source.toml").write_text(
        f"""serial = 1
valid_days = 30
[[keys]]
id = "maker"
public_key = "keys/maker.pub"
manufacturers = ["121D"]
[[entries]]
cpl_id = "CPL-BENCH"
manufacturer = "121D"
model = "0000"
firmware_version = "01020000"
min_hardware_version = "1111"
max_hardware_version = "1211"
manufacturer_image_sha256 = "{hashlib.sha256(body).hexdigest()}"
chts_version = "V1.3"
installation_validity_end = 2031-12-31
maintenance_end = 2034-12-31
upgrade_from = ["01000000"]
status = "active"
certificate_expiry = 2030-12-31
image = "image.bin"
"""
    )
    build_catalog(root / "source.toml", authority, root / "catalog", datetime.now(UTC))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _watch(url: str, token: str, stop: threading.Event, seen: list[int]) -> None:
    """One client of the bench page's live stream (what a browser's EventSource reads) until the station ends."""
    while not stop.is_set():
        try:
            with (
                httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=5) as client,
                client.stream("GET", "/api/v1/events") as events,
            ):
                for line in events.iter_lines():
                    if line.startswith("event: "):
                        seen[0] += 1
        except httpx.HTTPError:
            time.sleep(0.05)  # not listening yet, or gone


def _browse(url: str, pin: str, stop: threading.Event, seen: list[int], browser: dict[str, float]) -> None:
    """The bench page in Debian's headless Chromium (as tests/station/web drive it), signed in, until the station
    ends; counts the page's visible changes (the slots' progress and states, sampled every 0.2 s), its long tasks
    (the page's main thread busy over 50 ms at a stretch: what makes a page stutter, from the browser's own
    PerformanceObserver), and the browser's CPU seconds."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from tests.station.web.browser import chromium

    with chromium() as driver:
        while not stop.is_set():
            try:
                driver.get(url + "/sign-in")
                break
            except WebDriverException:
                time.sleep(0.1)  # not listening yet
        driver.find_element(By.ID, "operator").send_keys("bench")
        driver.find_element(By.ID, "pin").send_keys(pin + Keys.ENTER)
        driver.execute_script(
            "window.benchLong = [0, 0]; new PerformanceObserver((list) => { for (const task of list.getEntries()) "
            "{ window.benchLong[0] += 1; window.benchLong[1] = Math.max(window.benchLong[1], task.duration); } })"
            ".observe({type: 'longtask', buffered: true});"
        )
        last = None
        script = (
            "return Array.from(document.querySelectorAll('.slot')).map(s => s.className + "
            "s.querySelector('progress').value).join('|')"
        )
        while not stop.is_set():
            try:
                now = driver.execute_script(script)
                browser["long_tasks"], browser["longest_task_ms"] = driver.execute_script("return window.benchLong")
            except WebDriverException:
                break  # the station has gone
            if now != last:
                seen[0] += 1
                last = now
            time.sleep(0.2)
        service = driver.service.process
        if service is not None:
            browser["cpu_s"] = tree_cpu_seconds(service.pid)


def run_case(slots: int, baud: int, image_size: int, window: int, page: str = "idle") -> dict[str, Any]:
    """`page`: "off" (no web server), "idle" (the bench page served, nobody looking; the default config),
    "watched" (one client reading the page's live stream, as one browser's EventSource does), or "browser" (the
    page open in a real headless Chromium, signed in)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_world(root, image_size)
        config = root / "bench.toml"
        sim = subprocess.Popen(
            [*REFLASH, "sim", "bench", "--slots", str(slots), "--bench", "0", "--baud", str(baud),
             "--write-config", str(config), "--trust", f"121D={root / 'keys/maker.pub'}", "--state", str(root / "hubs"),
             "--catalog", str(root / "catalog"), "--authority", str(root / "keys/authority.pub")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not config.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.2)  # the file is written before the servers' first connection is accepted
            if window != 8:
                # `sim bench` writes each slot's options table (its line_baud): the window joins it.
                config.write_text(
                    re.sub(r"options = \{ (.*?) \}", rf"options = {{ \1, window = {window} }}", config.read_text())
                )
            port = _free_port()
            web = "enabled = false" if page == "off" else f'listen = "127.0.0.1:{port}"'
            config.write_text(config.read_text() + f"\n[web]\n{web}\n")
            station_config = load_config(config)
            store = station_config.open_store()
            ids = [(format_eui64(0x00DB510000000000 | n), n) for n in range(1, slots + 1)]
            store.import_order(OrderRequest("BENCH", "stock", None, "North", ids, "bench", "0" * 64))
            for chf_id, _ in ids:  # scanned in, as a hub must be before it is flashed
                store.receive("BENCH", chf_id)
            store.close()
            stop, seen, browser = threading.Event(), [0], dict[str, float]()
            watcher = None
            if page == "browser":
                subprocess.run([*REFLASH, "operators", "add", "bench", "--role", "operator", "--config", str(config)],
                               input="2468\n2468\n", capture_output=True, text=True, check=True)  # fmt: skip
                watcher = threading.Thread(target=_browse, args=(f"http://127.0.0.1:{port}", "2468", stop, seen,
                                                                 browser))  # fmt: skip
                watcher.start()
            if page == "watched":
                token = subprocess.run(
                    [*REFLASH, "tokens", "add", "bench", "--role", "operator", "--config", str(config)],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.strip()
                watcher = threading.Thread(target=_watch, args=(f"http://127.0.0.1:{port}", token, stop, seen))
                watcher.start()
            start = time.perf_counter()
            station = subprocess.Popen(
                [*REFLASH, "run", "--config", str(config), "--once", "--log-format", "json", "--no-live"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            _, status, usage = os.wait4(station.pid, 0)
            wall = time.perf_counter() - start
            station.returncode = os.waitstatus_to_exitcode(status)
            stop.set()
            if watcher is not None:
                watcher.join(30)
        finally:
            sim.send_signal(signal.SIGTERM)
            sim.wait(30)
        store = station_config.open_store()
        outcomes = [job.outcome for job in store.jobs()]
        transfers = [entry.data for entry in store.audit_entries() if entry.kind == "transfer_ended"]
        store.close()
    image_total = image_size + 126
    efficiencies = [image_total / (t["elapsed_s"] * baud / 10) for t in transfers if t["elapsed_s"] > 0]
    cpu = usage.ru_utime + usage.ru_stime
    mib = len(transfers) * image_total / 2**20
    return {
        "slots": slots,
        "window": window,
        "page": page,
        "page_events": seen[0],
        "browser_cpu_s": round(browser["cpu_s"], 2) if "cpu_s" in browser else None,
        "browser_long_tasks": browser.get("long_tasks"),
        "browser_longest_task_ms": browser.get("longest_task_ms"),
        "baud": baud,
        "image_bytes": image_total,
        "hubs": len(outcomes),
        "reflashed": outcomes.count(Outcome.REFLASHED),
        "exit_status": station.returncode,
        "wall_s": round(wall, 2),
        "hubs_per_hour": round(len(outcomes) / wall * 3600, 0),
        "efficiency": round(sum(efficiencies) / len(efficiencies), 3) if efficiencies else 0.0,
        "station_cpu_s": round(cpu, 2),
        "station_cpu_s_per_mib": round(cpu / mib, 3) if mib else None,
        "station_cores": round(cpu / wall, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", default="1,8,32,64")
    parser.add_argument("--baud", type=int, default=921_600)
    parser.add_argument("--image-kib", type=int, default=256)
    parser.add_argument(
        "--page",
        action="store_true",
        help="the largest --slots bench with no page, the page served, watched by one client, open in a browser",
    )
    parser.add_argument(
        "--page-in",
        default="off,idle,watched,browser",
        help="with --page, which cases (off, idle, watched, browser), each --runs times, interleaved",
    )
    parser.add_argument("--runs", type=int, default=1, help="with --page, how many runs of each case")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    size = args.image_kib * 1024
    if args.page:
        most = max(int(n) for n in args.slots.split(","))
        kinds = args.page_in.split(",")
        cases = [run_case(most, args.baud, size, 8, page) for _ in range(args.runs) for page in kinds]
    else:
        cases = [run_case(int(n), args.baud, size, 8) for n in args.slots.split(",")]
        cases.append(run_case(8, args.baud, size, 1))
    machine = {
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "note": "station and simulated hubs in separate processes on the same cores; random (incompressible) image",
    }
    if args.json:
        print(json.dumps({**machine, "cases": cases}, indent=2))
        return
    print(f"bench scale at {args.baud} baud, {args.image_kib} KiB image ({machine['date']}, {machine['machine']})")
    header = ("slots", "window", "page", "events", "hubs", "ok", "wall s", "hubs/h", "efficiency", "CPU s", "CPU s/MiB",
              "cores", "browser s", "long tasks")  # fmt: skip
    print(" ".join(f"{h:>10}" for h in header))
    for c in cases:
        row = (c["slots"], c["window"], c["page"], c["page_events"], c["hubs"], c["reflashed"], c["wall_s"],
               c["hubs_per_hour"], c["efficiency"], c["station_cpu_s"], c["station_cpu_s_per_mib"],
               c["station_cores"], "-" if c["browser_cpu_s"] is None else c["browser_cpu_s"],
               "-" if c["browser_long_tasks"] is None else c["browser_long_tasks"])  # fmt: skip
        print(" ".join(f"{v:>10}" for v in row))


if __name__ == "__main__":
    main()
