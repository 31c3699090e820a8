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
import os
import signal
import sqlite3
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from drivers.jig import JigDriver, driver_class
from firmware_catalog.catalog import CatalogHolder, Offer
from firmware_catalog.errors import CatalogError
from firmware_catalog.keys import load_public_key
from station.bench import Bench, BenchSettings
from station.config import JobSettings, StationConfig
from station.display_text import display_text
from station.job import JobContext
from station.reporter import Reporter
from station.slot import SlotView
from station.status_view import StatusTable, daemon_running, render_status, status_path, summary_line
from station.store import Store, StoreError

__all__ = ["EXIT_UNCONFIRMED", "daemon_running", "render_status", "run_station", "status_path"]

log = logging.getLogger("reflash")


# `run --once` when every slot finished but results are still unconfirmed because the broker could not be reached
# (or refused them): the hubs are done, their reports are not (docs/station.md).
EXIT_UNCONFIRMED = 3


def _emitter(log_format: str, quiet: bool) -> Any:
    def emit(event: str, **fields: Any) -> None:
        if log_format == "json":
            line = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event, **fields}
            print(json.dumps(line, default=str), flush=True)
        elif log_format == "text" and not quiet:
            details = " ".join(f"{k}={_field_text(v)}" for k, v in fields.items() if v is not None)
            print(f"{datetime.now().strftime('%H:%M:%S')} {display_text(event)} {details}", flush=True)

    return emit


def _field_text(value: Any) -> str:
    """One event field for a text log line: text as it is (escaped), and anything with structure (the outcomes
    counted, every slot's state) as compact JSON, never a Python repr an operator has to read."""
    if isinstance(value, dict | list | tuple):
        return display_text(json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":")))
    if isinstance(value, bool):
        return "true" if value else "false"
    return display_text(value)


async def _supervise_reporter(reporter: Reporter, first_backoff_s: float = 0.5, max_backoff_s: float = 30.0) -> None:
    """Run the reporter until it is stopped, restarting it with backoff whenever it fails: reporting must never die
    for good, or results would wait in the outbox until a restart. One log line when it fails (or fails
    differently), one when it runs again."""
    backoff = first_backoff_s
    failing: str | None = None
    while True:
        started = time.monotonic()
        try:
            await reporter.run()
            return
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
            if why != failing:
                log.error("the MQTT reporter failed (%s); restarting it, results wait in the outbox", why)
            failing = why
        if time.monotonic() - started > max_backoff_s:
            backoff = first_backoff_s  # it had been running a while: this is a new failure, not the same one
        if await reporter.wait_stopped(backoff):
            return
        backoff = min(backoff * 2, max_backoff_s)


def _folder_hint(path: Path) -> str:
    """Why SQLite may have failed where its message does not say: the store's folder is read-only or missing."""
    folder = path.parent
    if not folder.is_dir():
        return f" ({folder} is not a folder)"
    if not os.access(folder, os.W_OK):
        return f" ({folder} is read-only)"
    return ""


def _why(exc: BaseException) -> str:
    """One line saying what failed, for an operator (no traceback)."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    return str(exc) or type(exc).__name__


class _StartupError(Exception):
    """A configuration the station cannot start with; the message names the file, the slot and the problem."""


def _build_drivers(config: StationConfig) -> dict[str, JigDriver]:
    built: dict[str, JigDriver] = {}
    for n, slot in enumerate(config.slots):
        where = f"{config.source}: slots[{n}] ({slot.name})"
        options: dict[str, Any] = {"url": slot.url, **slot.options}
        for key in ("state_dir", "identity"):
            if key in options:
                options[key] = str(config.resolve(Path(options[key])))
        if "trusted_keys" in options:
            options["trusted_keys"] = {
                manufacturer: [str(config.resolve(Path(p))) for p in paths]
                for manufacturer, paths in dict(options["trusted_keys"]).items()
            }
        try:
            built[slot.name] = driver_class(slot.driver).from_config(options)
        except KeyError as exc:  # an unknown driver name, or a required option missing
            raise _StartupError(f"{where}: {exc.args[0] if exc.args else exc}") from exc
        except (ValueError, TypeError, OSError, CatalogError, LookupError) as exc:
            raise _StartupError(f"{where}: {exc}") from exc
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
    section = config.station
    store_path = config.resolve(section.store)

    def refuse(message: str, store: Store | None = None) -> int:
        print(f"error: {message}", file=sys.stderr)
        if store is not None:
            store.close()
        return 2

    # Everything is checked before anything is recorded: a station that will not start writes nothing to the audit.
    try:
        authority = load_public_key(config.resolve(config.catalog.authority_key))
        drivers = _build_drivers(config)
    except _StartupError as exc:
        return refuse(str(exc))
    except CatalogError as exc:  # an authority key that is missing, garbage, or private
        return refuse(f"[catalog] authority_key in {config.source}: {exc}")
    try:
        store = Store.from_config(config)
    except CatalogError as exc:  # the station key
        return refuse(f"[station] key in {config.source}: {exc}")
    except (sqlite3.Error, OSError, StoreError) as exc:
        return refuse(f"cannot open the store {store_path}: {_why(exc)}{_folder_hint(store_path)}")
    holder = CatalogHolder(authority, pin=store.catalog_pin())
    folder = config.resolve(config.catalog.folder)
    first = holder.offer(folder, datetime.now(UTC))
    if holder.current is None:
        # The one record a station that will not start makes: a refused catalog (a rollback, a forgery, an expired
        # one) is worth a trace of its own, and the entry is complete in itself.
        with contextlib.suppress(sqlite3.Error, OSError):
            store.record_catalog(False, first.code.value, first.message, None, str(folder))
        return refuse(
            f"no acceptable catalog in {folder} ({first.code.value}: {first.message}); the station flashes nothing "
            "without one",
            store,
        )
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
            return refuse(f"[mqtt] in {config.source}: {exc}", store)

    def record_offer(offer: Offer) -> None:
        store.record_catalog(
            offer.accepted, offer.code.value, offer.message, holder.pin if offer.accepted else None, str(folder)
        )
        emit("catalog", accepted=offer.accepted, code=offer.code.value, serial=offer.serial, message=offer.message)

    try:
        interrupted = store.interrupt_running_jobs()
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
        record_offer(first)
    except (sqlite3.Error, OSError) as exc:
        return refuse(f"cannot write the store {store_path}: {_why(exc)}{_folder_hint(store_path)}", store)

    def reload_catalog() -> None:
        try:
            record_offer(holder.offer(folder, datetime.now(UTC)))
        except sqlite3.OperationalError:
            # The store has said it cannot write. The catalog is in force (or refused) all the same; its audit
            # entry and the raised rollback pin wait until it is offered again (SIGHUP once the disk has space).
            log.error("SIGHUP: the catalog offer could not be recorded in the store; send SIGHUP again later")

    if section.key is None:
        emit("warning", message="no [station] key: audit checkpoints are not signed, so a cut tail goes unnoticed")
    ctx = JobContext(
        store=store,
        catalog=lambda: holder.current,
        tariff=config.tariff,
        station=section.id,
        region=section.region,
        settings=job_settings or config.job,
        emit=emit,
        require_scan_in=section.require_scan_in,
    )

    def reporting() -> dict[str, Any]:
        """The broker link, the bridges and the outbox, for `reflash status` (docs/station.md)."""
        if reporter is None:
            return {"reporting": None}
        return {"reporting": {**reporter.describe(), "last_ack_at": reporter.last_ack_at,
                              "outbox": store.outbox_backlog()}}  # fmt: skip

    bench = Bench(
        drivers,
        ctx,
        bench_settings,
        status_file=status_path(config),
        on_result=(lambda: reporter.wake.set()) if reporter else None,
        extra_status=reporting,
    )
    if reporter is not None:
        reporter.telemetry = bench.progress
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, bench.stop)
    loop.add_signal_handler(signal.SIGHUP, reload_catalog)
    emit("station_started", station=section.id, slots=len(drivers), once=once, interrupted_jobs=len(interrupted))
    reporter_task = asyncio.create_task(_supervise_reporter(reporter), name="reporter") if reporter else None
    unconfirmed = 0
    try:
        if live:
            console = Console()
            try:
                with Live(StatusTable(bench.describe()), console=console, refresh_per_second=4) as screen:
                    bench_task = asyncio.create_task(bench.run(once))
                    while not bench_task.done():
                        screen.update(StatusTable(bench.describe()))
                        await asyncio.wait({bench_task}, timeout=0.25)
                    screen.update(StatusTable(bench.describe()))
                    await bench_task
            finally:
                console.print(summary_line(bench.describe()))  # under the table's last frame, as the station stops
        else:
            await bench.run(once)
        if once and reporter is not None:
            await _drain_outbox(store, reporter, bench)
            unconfirmed = _unconfirmed_at_exit(store, reporter, emit)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if reporter is not None and reporter_task is not None:
            reporter.stop()
            # Stopped by a signal, the station answers within two seconds even when the broker does not.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reporter_task, 1.0 if bench.stopping else 15)
        slots = {v.name: _slot_state(v) for v in bench.views.values()}
        try:
            store.audit("station_stopped", drained=bench.stopping, outcomes=bench.outcomes, slots=slots)
            store.checkpoint()
        except sqlite3.OperationalError:
            log.error("the station's stop could not be recorded in the store (station_stopped, signed tail)")
        bench.finished = True
        bench.write_status()
        store.close()
    unfinished = [v.name for v in bench.views.values() if v.state in ("held", "error")]
    emit("station_stopped", outcomes=bench.outcomes, unfinished_slots=unfinished, slots=slots)
    if unfinished or bench.stopping:
        return 1
    return EXIT_UNCONFIRMED if once and unconfirmed else 0


def _slot_state(view: SlotView) -> dict[str, Any]:
    """A slot as the station stopped: what it was doing, why it could not go on, and how its last hub ended."""
    return {
        "state": view.state,
        "fault": view.fault,
        "message": view.message or None,
        "chf_id": view.chf_id,
        "last_chf_id": view.last_chf_id,
        "last_outcome": view.last_outcome,
        "last_reason": view.last_reason,
    }


async def _drain_outbox(
    store: Store, reporter: Reporter, bench: Bench, timeout_s: float = 30.0, unreachable_s: float = 5.0
) -> None:
    """With --once, give the reporter a moment to settle what this batch produced before stopping: up to
    `timeout_s`, or `unreachable_s` when the broker cannot be reached at all (said once, not waited out)."""
    start = time.monotonic()
    said = False
    while time.monotonic() - start < timeout_s and not bench.stopping:
        counts = store.outbox_counts()
        if counts["pending"] == 0 and counts["at_broker"] == 0:
            return
        if not reporter.connected.is_set():
            if not said:
                log.warning("waiting up to %.0f s for the broker to settle %d results", unreachable_s,
                            counts["pending"] + counts["at_broker"])  # fmt: skip
                said = True
            if time.monotonic() - start > unreachable_s:
                return
        reporter.wake.set()
        bench.write_status()
        await asyncio.sleep(0.1)


def _unconfirmed_at_exit(store: Store, reporter: Reporter, emit: Any) -> int:
    """Say what --once leaves unconfirmed. Returns how many results are not even at the broker (it could not be
    reached, or it refused them): those make `run --once` exit EXIT_UNCONFIRMED."""
    backlog = store.outbox_backlog()
    waiting = backlog["pending"] + backlog["at_broker"]
    if waiting:
        emit("results_unconfirmed", pending=backlog["pending"], at_broker=backlog["at_broker"],
             refused=backlog["refused"], broker_connected=reporter.link["connected"],
             broker_error=reporter.link["last_error"])  # fmt: skip
        log.warning(
            "%d results unconfirmed at exit: %d not at the broker (%s), %d at the broker without a DSP ack; they "
            "wait in the outbox for the next run", waiting, backlog["pending"],
            reporter.last_refusal or reporter.link["last_error"] or "not published yet", backlog["at_broker"],
        )  # fmt: skip
    return int(backlog["pending"])
