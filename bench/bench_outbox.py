"""Results per second from the outbox to confirmed at the DSP bridge, through a local Mosquitto.

    python bench/bench_outbox.py [--results 10000] [--json]

Each run fills a fresh station store with finished jobs (not timed), starts a private Mosquitto, the DSP bridge and
the reporter, and times from the reporter's start until every row is confirmed by a DSP ack. It runs the reporter as
configured (a window of publishes in flight) and, for comparison, the simple way: one publish in flight at a time
(stop-and-wait), on a tenth of the results.

CPU is what counts on a shared machine, not wall time: "station CPU" is this process's CPU time while the results
flow (the reporter: outbox reads, publishes, PUBACKs, ack checks, SQLite), less what the benchmark spends watching
the outbox; "bridge CPU" is the bridge process's CPU time over the same span, read from /proc, without its start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiomqtt

from bench.process_cpu import cpu_seconds
from firmware_catalog.hub import format_eui64
from simulators.dsp_bridge import SmiStore
from station.config import MqttConfig
from station.messages import hub_result
from station.mosquitto import Mosquitto
from station.outcome import Outcome
from station.reporter import Reporter
from station.store import Actor, Store

ACTOR = Actor("bench-station", "op-bench", "SSC-BENCH")


def fill(store: Store, count: int) -> None:
    identity = {"manufacturer": "121D", "model": "0000", "hardware_version": "1200", "firmware_version": "01000000"}
    for n in range(count):
        chf, gpf = format_eui64(n), format_eui64(n + 2**40)
        job_id = store.start_job(chf_id=chf, gpf_id=gpf, order_ref=None, slot="A1", identity=identity).id
        store.finish_job(
            job_id,
            outcome=Outcome.REFLASHED,
            reason="OK",
            firmware_after="01020000",
            target_version="01020000",
            image_sha256="ab" * 32,
            hub_sha256="ab" * 32,
            charge_pence=0,
            currency="GBP",
            report=lambda job, entry, mid: hub_result(
                job, entry.hash, mid, station=ACTOR.station, region="North", requesting_party=None
            ),
        )


async def bridge_ready(broker: Mosquitto) -> None:
    """Probe until the bridge answers: a message with a message_id but no valid body is acked as rejected."""
    probe_id = str(uuid.uuid4())
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"probe-{probe_id}") as client:
        await client.subscribe("reflash/v1/North/probe/ack", qos=1)
        async with asyncio.timeout(30):
            while True:
                await client.publish("reflash/v1/North/probe/result", json.dumps({"message_id": probe_id}), qos=1)
                try:
                    async with asyncio.timeout(0.5):
                        async for _ in client.messages:
                            return
                except TimeoutError:
                    continue


async def run_case(results: int, in_flight: int, workdir: Path) -> dict[str, Any]:
    store = Store(workdir / "station.db", ACTOR)
    fill(store, results)
    with Mosquitto(workdir / "mosquitto") as broker:
        # The bridge is the DSP's side: a process of its own, as it would be.
        bridge = subprocess.Popen(  # noqa: ASYNC220 -- started once, before timing
            [sys.executable, "-c", "from station.cli import main; main()", "sim", "dsp-bridge",
             "--broker", broker.url, "--db", str(workdir / "smi.db")],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await bridge_ready(broker)
            config = MqttConfig(url=broker.url, max_in_flight=in_flight, republish_after_s=120)
            birth = {"software_version": "bench", "facility": ACTOR.facility, "slots": 0}
            reporter = Reporter(store, config, station=ACTOR.station, region="North", birth=birth)
            # The bench watches the outbox on a connection of its own, with an indexed count of the open rows; the
            # CPU the watching takes is measured and left out of the station's.
            watch = sqlite3.connect(workdir / "station.db")
            watching = 0.0

            def still_open() -> int:
                nonlocal watching
                t0 = time.process_time()
                (count,) = watch.execute(
                    "SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'at_broker')"
                ).fetchone()
                watching += time.process_time() - t0
                return int(count)

            bridge_cpu0 = cpu_seconds(bridge.pid)
            cpu0, start = time.process_time(), time.perf_counter()
            reporter_task = asyncio.create_task(reporter.run())
            while still_open():  # noqa: ASYNC110 -- polling the store is the measurement
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - cpu0 - watching
            bridge_cpu = cpu_seconds(bridge.pid) - bridge_cpu0
            watch.close()
            reporter.stop()
            await reporter_task
            confirmed = store.outbox_counts()["confirmed"]
        finally:
            bridge.send_signal(signal.SIGTERM)
            bridge.wait(10)
    smi = SmiStore(workdir / "smi.db")
    applied = smi.applied_count()
    smi.close()
    store.close()
    return {
        "mode": "stop-and-wait" if in_flight == 1 else "windowed",
        "in_flight": in_flight,
        "results": results,
        "seconds": round(elapsed, 3),
        "results_per_s": round(results / elapsed, 1),
        "station_cpu_s": round(cpu, 3),
        "bridge_cpu_s": round(bridge_cpu, 3),
        "station_ms_per_result": round(cpu / results * 1000, 3),
        "bridge_ms_per_result": round(bridge_cpu / results * 1000, 3),
        "applied_once": applied == results and confirmed == results,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=10_000)
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cases = []
    for in_flight, count in ((args.in_flight, args.results), (1, max(args.results // 10, 1))):
        with tempfile.TemporaryDirectory() as tmp:
            cases.append(await run_case(count, in_flight, Path(tmp)))
    machine = {
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "note": "station (this process), DSP bridge (a process) and Mosquitto share the machine",
    }
    if args.json:
        print(json.dumps({**machine, "cases": cases}, indent=2))
        return
    print(f"outbox -> broker -> DSP bridge -> ack -> confirmed   ({machine['date']}, {machine['machine']})")
    print(
        f"{'mode':<14} {'in flight':>9} {'results':>8} {'seconds':>8} {'results/s':>10} "
        f"{'station CPU s':>13} {'bridge CPU s':>12} {'station ms/r':>12} {'bridge ms/r':>11} {'once':>5}"
    )
    for c in cases:
        print(
            f"{c['mode']:<14} {c['in_flight']:>9} {c['results']:>8} {c['seconds']:>8.2f} "
            f"{c['results_per_s']:>10.1f} {c['station_cpu_s']:>13.2f} {c['bridge_cpu_s']:>12.2f} "
            f"{c['station_ms_per_result']:>12.3f} {c['bridge_ms_per_result']:>11.3f} "
            f"{'yes' if c['applied_once'] else 'NO':>5}"
        )


if __name__ == "__main__":
    asyncio.run(main())
