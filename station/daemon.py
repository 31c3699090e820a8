"""`reflash run`: the station daemon. Start-up checks, the bench, the reporter, and a clean drain on SIGTERM.

Start-up, in order: configuration (operator ID and facility approval required), the store (jobs a crash left
running are marked interrupted), audit entries for the start and the operator's sign-in, the catalog (refused
without one), the drivers, then the bench and the reporter under one TaskGroup. SIGINT or SIGTERM drains: transfers
stop at a frame boundary, their jobs are recorded as interrupted, the audit tail is signed, the reporter publishes
`offline`. SIGHUP reloads the catalog; a refused catalog leaves the one in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import signal
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from drivers.jig import JigDriver, driver_class
from firmware_catalog.catalog import CatalogHolder
from firmware_catalog.keys import load_public_key
from station.bench import Bench, BenchSettings
from station.config import JobSettings, StationConfig
from station.job import JobContext
from station.reporter import Reporter
from station.store import Store

__all__ = ["render_status", "run_station", "status_path"]

log = logging.getLogger("reflash")
_OUTCOME_STYLE = {
    "REFLASHED": "green",
    "ALREADY_CURRENT": "cyan",
    "REFUSED": "yellow",
    "FAILED": "red",
    "QUARANTINED": "bold red",
    "SCRAP": "magenta",
    "UNEXPECTED": "bold yellow",
}


def status_path(config: StationConfig) -> Path:
    return config.resolve(config.station.store).parent / "status.json"


def _emitter(log_format: str, quiet: bool) -> Any:
    def emit(event: str, **fields: Any) -> None:
        if log_format == "json":
            line = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event, **fields}
            print(json.dumps(line, default=str), flush=True)
        elif log_format == "text" and not quiet:
            details = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
            print(f"{datetime.now().strftime('%H:%M:%S')} {event} {details}", flush=True)

    return emit


def render_status(status: dict[str, Any]) -> Table:
    """The operator's view: one row per slot, totals at the foot."""
    totals = status["totals"]
    table = Table(
        title=f"Station {status['station']}",
        caption=(
            f"{totals['hubs']} hubs, {totals['hubs_per_hour']} per hour, {totals['bytes_per_s'] / 1024:.0f} KiB/s; "
            + ", ".join(f"{k} {v}" for k, v in totals["outcomes"].items())
        ),
    )
    for column in ("slot", "hub (CHF)", "state", "progress", "KiB/s", "ETA", "last outcome"):
        table.add_column(column, no_wrap=True)
    for slot in status["slots"]:
        done, total = slot["bytes_done"], slot["bytes_total"]
        filled = int(20 * done / total) if total else 0
        bar = f"{'█' * filled}{'░' * (20 - filled)} {100 * done // total:3d}%" if total else ""
        eta = f"{slot['eta_s']:.0f}s" if slot["eta_s"] is not None else ""
        last = slot["last_outcome"] or ""
        style = _OUTCOME_STYLE.get(last, "")
        reason = slot["last_reason"] or ""
        outcome_text = f"[{style}]{last}[/]" + (f" {reason}" if reason and reason != last else "") if last else ""
        table.add_row(
            slot["name"],
            slot["chf_id"] or "",
            slot["state"] + (f": {slot['message']}" if slot["message"] else ""),
            bar,
            f"{slot['bytes_per_s'] / 1024:.0f}" if slot["bytes_per_s"] else "",
            eta,
            outcome_text,
        )
    return table


def _report_reporter_failure(task: asyncio.Task[None]) -> None:
    # The bench keeps flashing if reporting dies; say so loudly rather than lose it in a task.
    if not task.cancelled() and task.exception() is not None:
        log.error("the MQTT reporter stopped: %r; results wait in the outbox", task.exception())


def _build_drivers(config: StationConfig) -> dict[str, JigDriver]:
    built: dict[str, JigDriver] = {}
    for slot in config.slots:
        options: dict[str, Any] = {"url": slot.url, **slot.options}
        for key in ("state_dir", "identity"):
            if key in options:
                options[key] = str(config.resolve(Path(options[key])))
        if "trusted_keys" in options:
            options["trusted_keys"] = {
                manufacturer: [str(config.resolve(Path(p))) for p in paths]
                for manufacturer, paths in dict(options["trusted_keys"]).items()
            }
        built[slot.name] = driver_class(slot.driver).from_config(options)
    return built


async def run_station(
    config: StationConfig,
    *,
    once: bool = False,
    log_format: str = "text",
    live: bool | None = None,
    job_settings: JobSettings | None = None,
    bench_settings: BenchSettings | None = None,
) -> int:
    """Run until stopped (or, with `once`, until every slot is done). Returns the exit status."""
    live = sys.stdout.isatty() and log_format == "text" if live is None else live
    emit = _emitter(log_format, quiet=live)
    store = Store.from_config(config)
    interrupted = store.interrupt_running_jobs()
    section = config.station
    raw_config = config.source.read_bytes() if config.source.exists() else b""
    store.audit(
        "station_started",
        software_version=version("reflash-station"),
        config=str(config.source),
        config_sha256=hashlib.sha256(raw_config).hexdigest(),
        slots=[{"name": s.name, "driver": s.driver, "url": s.url} for s in config.slots],
        interrupted_jobs=interrupted,
    )
    store.audit("operator_signed_in", operator=section.operator)
    holder = CatalogHolder(load_public_key(config.resolve(config.catalog.authority_key)), pin=store.catalog_pin())
    folder = config.resolve(config.catalog.folder)

    def offer_catalog() -> None:
        offer = holder.offer(folder, datetime.now(UTC))
        store.record_catalog(
            offer.accepted, offer.code.value, offer.message, holder.pin if offer.accepted else None, str(folder)
        )
        emit("catalog", accepted=offer.accepted, code=offer.code.value, serial=offer.serial, message=offer.message)

    offer_catalog()
    if section.key is None:
        emit("warning", message="no [station] key: audit checkpoints are not signed, so a cut tail goes unnoticed")
    if holder.current is None:
        print(f"error: no acceptable catalog in {folder}; the station flashes nothing without one", file=sys.stderr)
        store.close()
        return 2
    drivers = _build_drivers(config)
    reporter = None
    if config.mqtt is not None:
        birth = {
            "software_version": version("reflash-station"),
            "facility": section.facility_approval,
            "operator": section.operator,
            "slots": len(config.slots),
            "catalog_serial": holder.current.serial,
        }
        try:
            reporter = Reporter(store, config.mqtt, station=section.id, region=section.region, birth=birth,
                                resolve=config.resolve)  # fmt: skip
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            print(f"error: [mqtt] in {config.source}: {exc}", file=sys.stderr)
            store.close()
            return 2
    ctx = JobContext(
        store=store,
        catalog=lambda: holder.current,
        tariff=config.tariff,
        station=section.id,
        region=section.region,
        settings=job_settings or config.job,
        emit=emit,
    )
    bench = Bench(
        drivers,
        ctx,
        bench_settings,
        status_file=status_path(config),
        on_result=(lambda: reporter.wake.set()) if reporter else None,
    )
    if reporter is not None:
        reporter.telemetry = bench.progress
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, bench.stop)
    loop.add_signal_handler(signal.SIGHUP, offer_catalog)
    emit("station_started", station=section.id, slots=len(drivers), once=once, interrupted_jobs=len(interrupted))
    reporter_task = asyncio.create_task(reporter.run(), name="reporter") if reporter else None
    if reporter_task is not None:
        reporter_task.add_done_callback(_report_reporter_failure)
    try:
        if live:
            with Live(render_status(bench.describe()), console=Console(), refresh_per_second=4) as screen:
                bench_task = asyncio.create_task(bench.run(once))
                while not bench_task.done():
                    screen.update(render_status(bench.describe()))
                    await asyncio.wait({bench_task}, timeout=0.25)
                screen.update(render_status(bench.describe()))
                await bench_task
        else:
            await bench.run(once)
        if once and reporter is not None:
            await _drain_outbox(store, reporter, bench)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if reporter is not None and reporter_task is not None:
            reporter.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reporter_task, 15)
        store.audit("station_stopped", drained=bench.stopping, outcomes=bench.outcomes)
        store.checkpoint()
        store.close()
    unfinished = [v.name for v in bench.views.values() if v.state in ("held", "error")]
    emit("station_stopped", outcomes=bench.outcomes, unfinished_slots=unfinished)
    return 0 if not unfinished and not bench.stopping else 1


async def _drain_outbox(store: Store, reporter: Reporter, bench: Bench, timeout_s: float = 30.0) -> None:
    """With --once, give the reporter a moment to settle what this batch produced before stopping."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not bench.stopping:
        counts = store.outbox_counts()
        if counts["pending"] == 0 and counts["at_broker"] == 0:
            return
        reporter.wake.set()
        await asyncio.sleep(0.1)
