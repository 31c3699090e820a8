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
import logging
import os
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from drivers.driver_registry import build_driver
from drivers.jig_driver import JigDriver
from firmware_catalog.catalog import CatalogHolder, Offer
from firmware_catalog.errors import CatalogError
from firmware_catalog.keys import load_public_key
from station.bench import Bench, BenchSettings
from station.config import JobSettings, StationConfig
from station.event_log import Emit, Event, event_writer
from station.job import JobContext
from station.listen_address import is_loopback, parse_listen
from station.metrics import MetricsServer, bind_listener, station_registry
from station.reporter import Reporter
from station.service_notify import ServiceNotifier, status_text
from station.slot import SlotSnapshot, SlotState
from station.status_view import StatusFile, StatusTable, daemon_running, render_status, status_path, summary_line
from station.store import Store, StoreError

__all__ = [
    "EXIT_UNCONFIRMED",
    "StartupRefused",
    "Station",
    "daemon_running",
    "render_status",
    "run_station",
    "status_path",
]

log = logging.getLogger("reflash")
# Slots working on a hub, as the heartbeat counts them: not empty, not looking, not finished or waiting.
_BUSY = (SlotState.DECIDING, SlotState.TRANSFERRING, SlotState.VERIFYING, SlotState.ACTIVATING)


# `run --once` when every slot finished but results are still unconfirmed because the broker could not be reached
# (or refused them): the hubs are done, their reports are not (docs/station.md).
EXIT_UNCONFIRMED = 3


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
        try:
            # Each driver's options model takes its relative paths from the configuration file's folder.
            built[slot.name] = build_driver(slot.driver, {"url": slot.url, **slot.options}, config.source.parent)
        except KeyError as exc:  # an unknown driver name
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
    try:
        station = Station.open(config, once=once, emit=event_writer(log_format, quiet=live), live=live,
                               job_settings=job_settings, bench_settings=bench_settings)  # fmt: skip
        async with station:
            await station.run()
    except StartupRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return station.exit_code


class StartupRefused(Exception):
    """The station will not start; the message names the file, the section or slot, and the problem. Nothing was
    recorded but, for a refused catalog, that refusal."""


class Station:
    """A started station: its store, catalog, bench and reporter, with every view of it, as one async context manager.

    `Station.open` checks the whole configuration and records nothing (it raises StartupRefused). Entering records
    the start and starts the supervised tasks (the reporter, the status file, the live table) in one TaskGroup;
    `run` drives the bench; leaving stops those tasks in order, records the stop, signs the audit tail and closes
    the store. Nothing the station starts outlives it: each slot's job ends with its slot (station/bench.py), and
    the bench ends before its drivers are closed.
    """

    def __init__(
        self,
        config: StationConfig,
        store: Store,
        holder: CatalogHolder,
        first_offer: Offer,
        drivers: dict[str, JigDriver],
        reporter: Reporter | None,
        *,
        once: bool,
        emit: Emit,
        live: bool,
        job_settings: JobSettings | None,
        bench_settings: BenchSettings | None,
        metrics_socket: socket.socket | None = None,
    ) -> None:
        self.config, self.store, self.holder, self.reporter = config, store, holder, reporter
        self.once, self.emit, self.live = once, emit, live
        self._first_offer = first_offer
        self._folder = config.resolve(config.catalog.folder)
        section = config.station
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
        self.bench = Bench(
            drivers,
            ctx,
            bench_settings,
            on_result=reporter.wake.set if reporter else None,
            extra_status=self._reporting,
        )
        if reporter is not None:
            reporter.telemetry = self.bench.live
            reporter.heartbeat = self._heartbeat
        self.status_file = StatusFile(status_path(config), self.bench.settings.status_interval_s)
        self.exit_code = 0
        self._interrupted_jobs: list[int] = []
        self._unconfirmed = 0
        self._group: asyncio.TaskGroup | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._console: Console | None = None
        # Prometheus metrics (station/metrics.py): read at scrape time, so the registry costs nothing until scraped.
        self.metrics = station_registry(self.bench, lambda: holder.current)
        self._metrics_server = MetricsServer(self.metrics, metrics_socket) if metrics_socket is not None else None
        self.notifier = ServiceNotifier()

    @classmethod
    def open(
        cls,
        config: StationConfig,
        *,
        once: bool,
        emit: Emit,
        live: bool,
        job_settings: JobSettings | None = None,
        bench_settings: BenchSettings | None = None,
    ) -> Station:
        """Check everything before anything is recorded: a station that will not start writes nothing to the audit
        (but a refused catalog: a rollback or a forgery deserves a trace)."""
        section = config.station
        store_path = config.resolve(section.store)
        try:
            authority = load_public_key(config.resolve(config.catalog.authority_key))
            drivers = _build_drivers(config)
        except _StartupError as exc:
            raise StartupRefused(str(exc)) from exc
        except CatalogError as exc:  # an authority key that is missing, garbage, or private
            raise StartupRefused(f"[catalog] authority_key in {config.source}: {exc}") from exc
        metrics_address = _metrics_address(config)
        if config.web.enabled:
            from station.web.server import WebServer, WebSettingsRefused

            try:
                WebServer.check(config)
            except WebSettingsRefused as exc:
                raise StartupRefused(str(exc)) from exc
        try:
            store = config.open_store()
        except CatalogError as exc:  # the station key
            raise StartupRefused(f"[station] key in {config.source}: {exc}") from exc
        except (sqlite3.Error, OSError, StoreError) as exc:
            raise StartupRefused(f"cannot open the store {store_path}: {_why(exc)}{_folder_hint(store_path)}") from exc
        try:
            holder = CatalogHolder(authority, pin=store.catalog_pin())
            folder = config.resolve(config.catalog.folder)
            first = holder.offer(folder, datetime.now(UTC))
            if holder.current is None:
                # The one record a station that will not start makes: a refused catalog (a rollback, a forgery, an
                # expired one) is worth a trace of its own, and the entry is complete in itself.
                with contextlib.suppress(*store.write_errors, OSError):
                    store.record_catalog(False, first.code.value, first.message, None, str(folder))
                raise StartupRefused(
                    f"no acceptable catalog in {folder} ({first.code.value}: {first.message}); the station flashes "
                    "nothing without one"
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
                    raise StartupRefused(f"[mqtt] in {config.source}: {exc}") from exc
            metrics_socket = _metrics_listener(config, metrics_address)
        except BaseException:
            store.close()
            raise
        return cls(config, store, holder, first, drivers, reporter, once=once, emit=emit, live=live,
                   job_settings=job_settings, bench_settings=bench_settings, metrics_socket=metrics_socket)  # fmt: skip

    # -- lifecycle -----------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Station:
        store, section = self.store, self.config.station
        store_path = self.config.resolve(section.store)
        cannot_write: tuple[type[BaseException], ...] = (*store.write_errors, OSError)
        try:
            self._interrupted_jobs = store.interrupt_running_jobs()
            source = self.config.source
            raw_config = source.read_bytes() if source.exists() else b""
            store.audit(
                "station_started",
                software_version=version("reflash-station"),
                config=str(source),
                config_sha256=hashlib.sha256(raw_config).hexdigest(),
                slots=[{"name": s.name, "driver": s.driver, "url": s.url} for s in self.config.slots],
                interrupted_jobs=self._interrupted_jobs,
            )
            store.audit("operator_signed_in", operator=section.operator)
            self._record_offer(self._first_offer)
        except cannot_write as exc:
            store.close()
            if self._metrics_server is not None:
                self._metrics_server.close()
            raise _CannotRecord(f"cannot write the store {store_path}: {_why(exc)}{_folder_hint(store_path)}") from exc
        if section.key is None:
            self.emit(Event.WARNING, message="no [station] key: audit checkpoints are not signed, so a cut tail goes "
                      "unnoticed")  # fmt: skip
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_catalog)
        metrics = self._metrics_server.url if self._metrics_server is not None else None
        self.emit(Event.STATION_STARTED, station=section.id, slots=len(self.bench.drivers), once=self.once,
                  interrupted_jobs=len(self._interrupted_jobs), metrics=metrics)  # fmt: skip
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        self._start("status-file", lambda: self.status_file.follow(self.bench.live))
        if self.live:
            self._console = Console()
            self._start("live-table", self._live_table)
        if self.config.web.enabled:
            from station.web.server import WebServer

            wake = self.reporter.wake.set if self.reporter is not None else None
            web = WebServer(self.config, self.bench.live, store, self.emit, wake, metrics=self.metrics,
                            offer_catalog=self.offer_catalog, catalog_serial=self._catalog_serial)  # fmt: skip
            self._start("web", web.serve)
        if self.reporter is not None:
            self._tasks["reporter"] = self._group.create_task(_supervise_reporter(self.reporter), name="reporter")
        if self._metrics_server is not None:
            self._start("metrics", self._metrics_server.serve)
        if self.notifier.enabled:
            self.notifier.ready(status_text(self.bench.snapshot()))
            self._start("service-notify", self._notify_service)
        return self

    async def run(self) -> None:
        """The bench, until it is stopped (SIGINT, SIGTERM) or, with `once`, until every slot has done its hub; with
        `once`, the results are then given a moment to reach the DSP."""
        await self.bench.run(self.once)
        if self.once and self.reporter is not None:
            await _drain_outbox(self.store, self.reporter, self.bench)
            self._unconfirmed = _unconfirmed_at_exit(self.store, self.reporter, self.emit)

    async def __aexit__(self, *exc_info: object) -> None:
        bench, store = self.bench, self.store
        if not bench.stopping:  # `--once` ending by itself (a signal has said STOPPING=1 already)
            self.notifier.stopping()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        # The reporter stops last: the stop is recorded and the tail signed while it still runs, so that it
        # publishes that checkpoint (the anchor of the whole session) and the last heartbeat before `offline`. The
        # other tasks (the bench page among them) end first, so that nothing is recorded after the stop.
        reporter_task = self._tasks.pop("reporter", None)
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        if self._metrics_server is not None:
            self._metrics_server.close()
        slots = {snapshot.name: _slot_state(snapshot) for snapshot in bench.snapshot().slots}
        try:
            store.audit("station_stopped", drained=bench.stopping, outcomes=bench.outcomes, slots=slots)
            store.checkpoint()
        except store.write_errors:
            log.error("the station's stop could not be recorded in the store (station_stopped, signed tail)")
        if self.reporter is not None and reporter_task is not None:
            self.reporter.stop()
            # Stopped by a signal, the station answers within two seconds even when the broker does not.
            with contextlib.suppress(Exception):  # a reporter that failed has said so (_supervise_reporter)
                await asyncio.wait_for(asyncio.shield(reporter_task), 1.0 if bench.stopping else 15)
            reporter_task.cancel()
        assert self._group is not None
        try:
            await self._group.__aexit__(None, None, None)
        except BaseExceptionGroup as group:  # the supervised tasks log their own faults; none may stop the stop
            log.error("stopping the station's tasks: %s", group.exceptions)
        bench.finished = True
        last = bench.snapshot()
        self.status_file.write(last)
        store.close()
        if self._console is not None:
            self._console.print(summary_line(last.model_dump(mode="json")))  # under the table's last frame
        unfinished = [slot.name for slot in last.slots if slot.state.unfinished]
        self.emit(Event.STATION_STOPPED, outcomes=bench.outcomes, unfinished_slots=unfinished, slots=slots)
        if unfinished or bench.stopping:
            self.exit_code = 1
        else:
            self.exit_code = EXIT_UNCONFIRMED if self.once and self._unconfirmed else 0

    def _start(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        assert self._group is not None
        self._tasks[name] = self._group.create_task(_supervise(name, work), name=name)

    def _stop(self) -> None:
        """SIGINT or SIGTERM: drain the bench, and tell systemd it is stopping."""
        if not self.bench.stopping:
            self.notifier.stopping()
        self.bench.stop()

    async def _notify_service(self) -> None:
        """systemd's watchdog, every half of WatchdogSec: sent from the event loop, so a loop that is stuck (or a
        process that hangs) stops it and systemd restarts the station. The STATUS= line goes with it when changed."""
        interval = self.notifier.watchdog_interval_s
        while True:
            if interval is not None:
                self.notifier.watchdog()
            if not self.bench.stopping:
                self.notifier.status(status_text(self.bench.snapshot()))
            await asyncio.sleep(min(interval, 5.0) if interval is not None else 5.0)

    async def _live_table(self) -> None:
        """The live table on the operator's terminal: a subscriber, redrawn on each change, four times a second at
        most (rich redraws the same frame in between for a resized terminal)."""
        assert self._console is not None
        live = self.bench.live
        with Live(StatusTable(self.bench.describe()), console=self._console, refresh_per_second=4) as screen:
            try:
                async for snapshot in live.subscribe(min_interval_s=0.25):
                    screen.update(StatusTable(snapshot.model_dump(mode="json")))
            finally:
                screen.update(StatusTable(self.bench.describe()))

    # -- what the station does on request ---------------------------------------------------------------------------

    def _record_offer(self, offer: Offer) -> None:
        holder = self.holder
        self.store.record_catalog(
            offer.accepted, offer.code.value, offer.message, holder.pin if offer.accepted else None, str(self._folder)
        )
        self.emit(Event.CATALOG, accepted=offer.accepted, code=offer.code.value, serial=offer.serial,
                  message=offer.message)  # fmt: skip

    def offer_catalog(self) -> Offer:
        """Offer the catalog folder again and record the offer (SIGHUP, or a supervisor at the bench page); a refused
        catalog leaves the one in force. Raises the store's write errors when the offer cannot be recorded."""
        offer = self.holder.offer(self._folder, datetime.now(UTC))
        self._record_offer(offer)
        return offer

    def _catalog_serial(self) -> int | None:
        return self.holder.current.serial if self.holder.current is not None else None

    def _reload_catalog(self) -> None:
        """SIGHUP: offer the catalog folder again; a refused catalog leaves the one in force."""
        try:
            self.offer_catalog()
        except self.store.write_errors:
            # The store has said it cannot write. The catalog is in force (or refused) all the same; its audit
            # entry and the raised rollback pin wait until it is offered again (SIGHUP once the disk has space).
            log.error("SIGHUP: the catalog offer could not be recorded in the store; send SIGHUP again later")

    def _heartbeat(self) -> dict[str, Any]:
        """The station's figures for its heartbeat (docs/mqtt-api.md, StationHeartbeat): read when it is sent."""
        snapshot = self.bench.snapshot()
        today = datetime.now(UTC).date()
        counts = self.store.outbox_counts()
        current = self.holder.current
        return {
            "slots": len(snapshot.slots),
            "slots_busy": sum(1 for slot in snapshot.slots if slot.state in _BUSY),
            "day": today,
            "hubs_today": self.store.outcomes_on(today),
            "outbox_backlog": counts["pending"] + counts["at_broker"],
            "anchors_waiting": self.store.outbox.anchors_waiting(),
            "catalog_serial": current.serial if current is not None else None,
        }

    def _reporting(self) -> dict[str, Any]:
        """The broker link, the bridges and the outbox, for `reflash status` (docs/station.md)."""
        reporter = self.reporter
        if reporter is None:
            return {"reporting": None}
        return {"reporting": {**reporter.describe(), "last_ack_at": reporter.last_ack_at,
                              "outbox": self.store.outbox_backlog()}}  # fmt: skip


def _metrics_address(config: StationConfig) -> tuple[str, int] | None:
    """`[metrics] listen`, checked before anything is opened: loopback only, since the metrics are not
    authenticated."""
    if config.metrics.listen is None:
        return None
    host, port = parse_listen(config.metrics.listen)
    if not is_loopback(host):
        raise StartupRefused(
            f"[metrics] listen in {config.source}: {config.metrics.listen} is not a loopback address; the metrics are "
            "not authenticated, so they are served on 127.0.0.1, ::1 or localhost only"
        )
    return host, port


def _metrics_listener(config: StationConfig, address: tuple[str, int] | None) -> socket.socket | None:
    """The metrics' socket, bound before the start is recorded: a station that cannot serve them where told does
    not start."""
    if address is None:
        return None
    try:
        return bind_listener(*address)
    except OSError as exc:
        raise StartupRefused(f"[metrics] listen in {config.source}: cannot listen on {config.metrics.listen}: "
                             f"{_why(exc)}") from exc  # fmt: skip


class _CannotRecord(StartupRefused):
    """The store opened but the start could not be written (a full or read-only disk)."""


async def _supervise(name: str, work: Callable[[], Awaitable[None]], max_backoff_s: float = 30.0) -> None:
    """Run `work` until it returns or is cancelled, restarting it with backoff when it fails: a view of the station
    (the status file, the live table) must never take the station down, nor stop for good. Said once per kind of
    failure."""
    backoff, failing = 0.5, None
    while True:
        try:
            await work()
            return
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
            if why != failing:
                log.exception("the station's %s failed; restarting it", name)
            failing = why
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, max_backoff_s)


def _slot_state(slot: SlotSnapshot) -> dict[str, Any]:
    """A slot as the station stopped: what it was doing, why it could not go on, and how its last hub ended."""
    return {
        "state": slot.state.value,
        "fault": slot.fault.value if slot.fault else None,
        "message": slot.message or None,
        "chf_id": slot.chf_id,
        "last_chf_id": slot.last_chf_id,
        "last_outcome": slot.last_outcome.value if slot.last_outcome else None,
        "last_reason": slot.last_reason,
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
        reporter.outbox_changed.clear()
        reporter.wake.set()
        # Woken when the reporter records a PUBACK, an ack or a refusal; the timeout only bounds the wait for a
        # broker that stays away (the reporter's own reconnects do not touch the outbox).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reporter.outbox_changed.wait(), 0.5)


def _unconfirmed_at_exit(store: Store, reporter: Reporter, emit: Emit) -> int:
    """Say what --once leaves unconfirmed. Returns how many results are not even at the broker (it could not be
    reached, or it refused them): those make `run --once` exit EXIT_UNCONFIRMED."""
    backlog = store.outbox_backlog()
    waiting = backlog["pending"] + backlog["at_broker"]
    if waiting:
        emit(Event.RESULTS_UNCONFIRMED, pending=backlog["pending"], at_broker=backlog["at_broker"],
             refused=backlog["refused"], broker_connected=reporter.link["connected"],
             broker_error=reporter.link["last_error"])  # fmt: skip
        log.warning(
            "%d results unconfirmed at exit: %d not at the broker (%s), %d at the broker without a DSP ack; they "
            "wait in the outbox for the next run", waiting, backlog["pending"],
            reporter.last_refusal or reporter.link["last_error"] or "not published yet", backlog["at_broker"],
        )  # fmt: skip
    return int(backlog["pending"])
