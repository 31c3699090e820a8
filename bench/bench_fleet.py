"""Confirmed results per second through the fleet's brokers: stations -> site brokers -> central broker -> DSP bridges
-> acks back, with the CPU each component spends per result and the end-to-end latency.

    python -m bench.bench_fleet [--stations 4] [--sites 2] [--bridges 2] [--results 2000] [--rate 13.6] [--json]

The brokers run from the shipped files (config/mosquitto.conf with config/fleet/site-bridge.conf at each site,
config/fleet/central-broker.conf at the centre: station/fleet_brokers.py), site to centre over TLS with each site's
certificate, no relay between them. Every station is a process of its own (a real store and reporter, talking to its
site broker), every DSP bridge too (`reflash sim dsp-bridge`, one shared-subscription group, one SMI database).

Two phases, one after the other:

- drain: every station starts with `--results` finished jobs in its outbox and publishes them at full speed (its
  `max_in_flight` window); confirmed results per second over the whole fleet, from the stations' start to the last
  ack recorded, and the CPU each component spent in that time per result;
- paced: every station finishes jobs at `--rate` results per second (default 13.6: bench_scale's 64-slot bench, about
  49,000 hubs an hour, docs/performance.md) for `--paced-s` seconds; latency from the outbox row's creation (the job's
  end) to its confirmation (the DSP's ack recorded), as percentiles, and CPU per result again, this time with the
  station's recording of each result included.

CPU is each process's user + system time from /proc/PID/stat: stations, site brokers (their bridge to the centre
runs inside them), the central broker, DSP bridges. Everything shares this machine's cores: per-result figures
add up; rates are this machine's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
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
from station.audit import AuditEntry
from station.fleet_brokers import Fleet
from station.messages import hub_result
from station.outcome import Outcome
from station.store import Actor, JobRecord, Store

REGIONS = ("North", "Central", "South")


def finish(store: Store, station: str, region: str, first: int, count: int) -> None:
    """Jobs ended on a bench: `count` REFLASHED results, each in the store's one transaction."""

    def report(job: JobRecord, entry: AuditEntry, message_id: str) -> dict[str, Any]:
        return hub_result(job, entry.hash, message_id, station=station, region=region, requesting_party=None)

    number = int(station.rsplit("-", 1)[1])
    identity = {"manufacturer": "121D", "model": "0000", "hardware_version": "1200", "firmware_version": "01000000"}
    for n in range(first, first + count):
        chf = format_eui64(0x00DB120000000000 | number << 24 | n)
        gpf = format_eui64(0x00DB120000000000 | number << 24 | 1 << 23 | n)
        job_id = store.start_job(chf_id=chf, gpf_id=gpf, order_ref=None, slot="A1", identity=identity).id
        store.finish_job(
            job_id, outcome=Outcome.REFLASHED, reason="REFLASHED", firmware_after="01020000",
            target_version="01020000", image_sha256="ab" * 32, hub_sha256="ab" * 32, charge_pence=0, currency="GBP",
            report=report,
        )  # fmt: skip


# -- a station: a process of its own ---------------------------------------------------------------------------------


async def station_worker(args: argparse.Namespace) -> None:
    """Drain the outbox, say so, wait for `go`, finish jobs at the paced rate, and report CPU and latencies."""
    from station.config import MqttConfig
    from station.reporter import Reporter

    store = Store(args.db, Actor(args.station, "op-bench", "SSC-BENCH"))
    config = MqttConfig(url=args.url, username=args.station, password_file=args.password_file,
                        republish_after_s=120, republish_max_s=600)  # fmt: skip
    birth = {"software_version": "bench", "facility": "SSC-BENCH", "slots": 64}
    reporter = Reporter(store, config, station=args.station, region=args.region, birth=birth)
    loop = asyncio.get_running_loop()
    began = time.time()
    task = asyncio.create_task(reporter.run())

    async def settled(total: int) -> None:
        # Woken by the reporter when it records a PUBACK, an ack or a refusal, as `run --once` waits: polling the
        # outbox's counts every 10 ms was the benchmark's own cost, counted as the station's.
        while True:
            reporter.outbox_changed.clear()
            if store.outbox_counts()["confirmed"] >= total:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reporter.outbox_changed.wait(), 1.0)

    cpu0 = time.process_time()
    await settled(args.results)
    cpu_drain = time.process_time() - cpu0
    print(json.dumps({"began": began, "drained": time.time(), "cpu_s": cpu_drain}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # "go"
    cpu0 = time.process_time()
    paced = round(args.rate * args.paced_s)
    start = loop.time()
    for n in range(paced):
        await asyncio.sleep(max(0.0, start + n / args.rate - loop.time()))
        finish(store, args.station, args.region, args.results + n, 1)
        reporter.wake.set()
    await settled(args.results + paced)
    cpu_paced = time.process_time() - cpu0
    latencies = []
    for row in store.outbox.messages(kind="hub_result")[args.results :]:
        made, confirmed = datetime.fromisoformat(row.created_at or ""), datetime.fromisoformat(row.confirmed_at or "")
        latencies.append((confirmed - made).total_seconds() * 1000)
    reporter.stop()
    await task
    store.close()
    print(json.dumps({"paced": paced, "cpu_s": cpu_paced, "latencies_ms": latencies}), flush=True)


# -- the fleet -------------------------------------------------------------------------------------------------------


async def fleet_ready(fleet: Fleet, sites: int, bridges: int) -> None:
    """Every DSP bridge online and every site's link up, as the centre sees them (retained)."""
    cert, key = fleet.ca.issue("dashboard")
    tls = aiomqtt.TLSParameters(ca_certs=str(fleet.ca.ca), certfile=str(cert), keyfile=str(key))
    state: dict[str, bytes] = {}
    async with aiomqtt.Client("127.0.0.1", fleet.central.port, identifier=f"bench-{uuid.uuid4()}",
                              tls_params=tls) as client:  # fmt: skip
        await client.subscribe("reflash/v1/STATE/+", qos=1)
        await client.subscribe("reflash-link/+/state", qos=1)
        async with asyncio.timeout(60):
            async for message in client.messages:
                state[str(message.topic)] = bytes(message.payload)
                online = sum(b'"online"' in v for k, v in state.items() if k.startswith("reflash/v1/STATE/"))
                links = sum(v == b"1" for k, v in state.items() if k.startswith("reflash-link/"))
                if online == bridges and links == sites:
                    return


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    names = [f"st-bench-{n:02d}" for n in range(1, args.stations + 1)]
    layout: dict[str, dict[str, str]] = {f"site-bench-{s}": {} for s in range(1, args.sites + 1)}
    for n, name in enumerate(names):
        layout[f"site-bench-{n % args.sites + 1}"][name] = REGIONS[n % args.sites % len(REGIONS)]
    # The backlog is written before anything runs (not timed, not counted).
    for stations in layout.values():
        for name, region in stations.items():
            store = Store(workdir / f"{name}.db", Actor(name, "op-bench", "SSC-BENCH"))
            finish(store, name, region, 0, args.results)
            store.close()
    fleet = Fleet(workdir / "fleet", layout, bridges=args.bridges, cuttable_links=False, restart_timeout="1 5")
    await fleet.start()
    workers: list[subprocess.Popen[str]] = []
    try:
        await fleet_ready(fleet, args.sites, args.bridges)
        processes: dict[str, list[int | None]] = {
            "site broker": [s.broker.pid for s in fleet.sites.values()], "central broker": [fleet.central.pid],
            "DSP bridge": [p.pid for p in fleet.bridges.values()],
        }  # fmt: skip

        def cpu() -> dict[str, float]:
            return {what: sum(cpu_seconds(pid) for pid in pids if pid is not None) for what, pids in processes.items()}

        before = cpu()
        for site in fleet.sites.values():
            for name, region in site.stations.items():
                workers.append(subprocess.Popen(  # noqa: ASYNC220 -- started before timing matters
                    [sys.executable, __file__, "--worker", "--db", str(workdir / f"{name}.db"), "--url",
                     site.broker.url, "--station", name, "--region", region, "--password-file",
                     str(site.passwords[name]), "--results", str(args.results), "--rate", str(args.rate),
                     "--paced-s", str(args.paced_s)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                ))  # fmt: skip
        loop = asyncio.get_running_loop()
        drained = [json.loads(await loop.run_in_executor(None, w.stdout.readline)) for w in workers]  # type: ignore[union-attr]
        # From the first station's reporter start to the last station's last ack: process start-up is not in it.
        drain_s = max(d["drained"] for d in drained) - min(d["began"] for d in drained)
        after = cpu()
        drain_cpu = {"station": sum(d["cpu_s"] for d in drained), **{k: after[k] - before[k] for k in after}}
        for w in workers:
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        paced = [json.loads(await loop.run_in_executor(None, w.stdout.readline)) for w in workers]  # type: ignore[union-attr]
        final = cpu()
        paced_cpu = {"station": sum(p["cpu_s"] for p in paced), **{k: final[k] - after[k] for k in final}}
        for w in workers:
            w.wait(30)
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
        await fleet.stop()
    total = args.results * args.stations
    paced_total = sum(p["paced"] for p in paced)
    latencies = [ms for p in paced for ms in p["latencies_ms"]]
    from simulators.dsp_bridge import SmiStore

    smi = SmiStore(fleet.smi_path)
    applied = smi.applied_count()
    smi.close()
    return {
        "stations": args.stations, "sites": args.sites, "bridges": args.bridges,
        "drain": {
            "results": total, "seconds": round(drain_s, 2), "confirmed_per_s": round(total / drain_s, 1),
            "cpu_ms_per_result": {k: round(v * 1000 / total, 3) for k, v in drain_cpu.items()},
            "cpu_s": {k: round(v, 2) for k, v in drain_cpu.items()},
        },
        "paced": {
            "rate_per_station": args.rate, "results": paced_total,
            "cpu_ms_per_result": {k: round(v * 1000 / paced_total, 3) for k, v in paced_cpu.items()},
            "latency_ms": {f"p{p}": round(percentile(latencies, p), 1) for p in (50, 90, 99)}
            | {"max": round(max(latencies), 1), "mean": round(statistics.fmean(latencies), 1)},
        },
        "applied_once": applied == total + paced_total,
    }  # fmt: skip


def show(result: dict[str, Any], machine: dict[str, str]) -> None:
    print("stations -> site brokers -> central broker -> DSP bridges -> acks", f"({machine['date']},",
          f"{machine['machine']}, load {machine['load_average']})")  # fmt: skip
    print(f"{result['stations']} stations on {result['sites']} sites, {result['bridges']} DSP bridges; "
          f"applied once: {'yes' if result['applied_once'] else 'NO'}")  # fmt: skip
    drain, paced = result["drain"], result["paced"]
    print(f"\ndrain: {drain['results']} results in {drain['seconds']:.2f} s = {drain['confirmed_per_s']:.0f} "
          f"confirmed results/s")  # fmt: skip
    print(
        f"paced: {paced['rate_per_station']}/s per station, {paced['results']} results; latency ms "
        + ", ".join(f"{k} {v}" for k, v in paced["latency_ms"].items())
    )
    print(f"\n{'CPU ms per result':<18} {'drain':>8} {'paced':>8}")
    rows = [(c, drain["cpu_ms_per_result"][c], paced["cpu_ms_per_result"][c]) for c in drain["cpu_ms_per_result"]]
    rows.append(("total", sum(r[1] for r in rows), sum(r[2] for r in rows)))
    for component, drained, paced_ms in rows:
        print(f"{component:<18} {drained:>8.3f} {paced_ms:>8.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=4)
    parser.add_argument("--sites", type=int, default=2)
    parser.add_argument("--bridges", type=int, default=2)
    parser.add_argument("--results", type=int, default=2000, help="each station's backlog for the drain phase")
    parser.add_argument("--rate", type=float, default=13.6, help="results per second per station, paced phase")
    parser.add_argument("--paced-s", type=float, default=20.0, help="how long the paced phase finishes jobs")
    parser.add_argument("--json", action="store_true")
    # A station's process (started by the benchmark itself).
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for option in ("--db", "--url", "--station", "--region", "--password-file"):
        parser.add_argument(option, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.db, args.password_file = Path(args.db), Path(args.password_file)
        asyncio.run(station_worker(args))
        return
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    machine = {
        "date": datetime.now(UTC).isoformat(timespec="minutes"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    if args.json:
        print(json.dumps({**machine, **result}, indent=2))
        return
    show(result, machine)


if __name__ == "__main__":
    main()
