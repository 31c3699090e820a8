"""The station's Prometheus metrics: one `CollectorRegistry` of its own (never the library's global one), read at
scrape time, and the two ways to serve it (docs/operations.md lists every name).

Why a collector read at scrape time rather than counters and gauges set as the station works: everything a metric
says is already kept (the bench's snapshot: slots, outcomes, rates; each slot's counters; the reporter's link and
refusals; the outbox in the store; the catalog in force), so the metrics cost nothing between scrapes and cannot
drift from what `reflash status` shows. A scrape builds one snapshot, as the status file does twice a second.

Counters count since the station started (a restart starts them again, as Prometheus expects; `process_start_time_
seconds` says when). Collection runs on the event loop: both servers here call it there, so it reads the bench and
the store from the thread that owns them.

- `metrics_app(registry)`: an ASGI app (prometheus-client's own) for a web server to mount at `/metrics`.
- `MetricsServer`: a tiny HTTP server of its own for `[metrics] listen` until the station has a web server: GET
  /metrics only, one request per connection, loopback addresses only (the metrics are not authenticated).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    make_asgi_app,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from station.slot import SlotState

if TYPE_CHECKING:
    from firmware_catalog.catalog import Catalog
    from station.bench import Bench

__all__ = [
    "MetricsServer",
    "StationCollector",
    "bind_listener",
    "metrics_app",
    "station_registry",
]

log = logging.getLogger(__name__)


class StationCollector(Collector):
    """Every `reflash_*` metric, built from the bench, its reporter's view and the catalog in force when scraped."""

    def __init__(self, bench: Bench, catalog: Callable[[], Catalog | None]) -> None:
        self._bench = bench
        self._catalog = catalog

    def collect(self) -> Iterable[Metric]:
        snapshot = self._bench.snapshot()
        hubs = CounterMetricFamily("reflash_hubs", "Hubs that got an outcome since the station started",
                                   labels=["outcome"])  # fmt: skip
        for outcome, count in snapshot.totals.outcomes.items():
            hubs.add_metric([outcome], count)
        yield hubs
        counters = self._bench.counters()
        yield CounterMetricFamily(
            "reflash_transferred_bytes",
            "Image bytes the hubs acknowledged since the station started (a resumed prefix counts once)",
            value=sum(c.bytes_acked for c in counters.values()),
        )
        link_errors = CounterMetricFamily(
            "reflash_link_errors", "Transfer attempts that ended with a link error, by slot", labels=["slot"]
        )
        rate = GaugeMetricFamily("reflash_slot_transfer_rate_bytes_per_second", "Each slot's transfer rate now",
                                 labels=["slot"])  # fmt: skip
        for slot in snapshot.slots:
            link_errors.add_metric([slot.name], counters[slot.name].link_errors if slot.name in counters else 0)
            rate.add_metric([slot.name], slot.bytes_per_s)
        yield link_errors
        yield rate
        states = GaugeMetricFamily("reflash_slots", "Slots by state", labels=["state"])
        for state in SlotState:
            states.add_metric([state.value], sum(1 for slot in snapshot.slots if slot.state is state))
        yield states
        catalog = self._catalog()
        if catalog is not None:
            yield GaugeMetricFamily("reflash_catalog_serial", "The serial of the catalog in force",
                                    value=catalog.serial)  # fmt: skip
            yield GaugeMetricFamily(
                "reflash_catalog_expiry_timestamp_seconds",
                "When the catalog in force expires (Unix time)",
                value=catalog.document.expires_at.timestamp(),
            )
        yield from _reporting(snapshot.reporting, snapshot.updated_at)


def _reporting(reporting: dict[str, Any] | None, now: float) -> Iterable[Metric]:
    """The DSP link's metrics, from the snapshot's `reporting` (station/daemon.py: the reporter and the outbox);
    none without `[mqtt]`, and no outbox figures when the store could not be read."""
    if reporting is None:
        return
    yield GaugeMetricFamily("reflash_broker_connected", "1 while the reporter is connected to the broker",
                            value=1 if reporting["broker"]["connected"] else 0)  # fmt: skip
    yield CounterMetricFamily("reflash_dsp_acks_refused", "DSP acks refused because ack.schema.json rejects them",
                              value=reporting["refused_acks"])  # fmt: skip
    yield CounterMetricFamily("reflash_broker_publishes_refused", "Publishes the broker refused (a PUBACK failure)",
                              value=reporting["refused_publishes"])  # fmt: skip
    outbox = reporting.get("outbox")
    if outbox is None:
        return
    backlog = GaugeMetricFamily("reflash_outbox_messages", "Messages in the outbox by state", labels=["state"])
    for state in ("pending", "at_broker", "confirmed", "rejected"):
        backlog.add_metric([state], outbox[state])
    yield backlog
    oldest = outbox["oldest_unconfirmed_at"]
    age = max(0.0, now - datetime.fromisoformat(oldest).timestamp()) if oldest else 0.0
    yield GaugeMetricFamily(
        "reflash_outbox_oldest_unconfirmed_age_seconds",
        "Age of the oldest message not yet confirmed by the DSP (0 when none waits)",
        value=round(age, 3),
    )


def station_registry(bench: Bench, catalog: Callable[[], Catalog | None]) -> CollectorRegistry:
    """The station's registry: its own metrics and the process's (CPU, memory, file descriptors, GC, Python)."""
    registry = CollectorRegistry()
    registry.register(StationCollector(bench, catalog))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def metrics_app(registry: CollectorRegistry) -> Callable[..., Any]:
    """An ASGI app serving `registry` in the Prometheus text format (or OpenMetrics, as the scraper asks), to mount at
    `/metrics`. It collects on the event loop, where the bench and the store live."""
    app: Callable[..., Any] = make_asgi_app(registry)
    return app


# -- [metrics] listen --------------------------------------------------------------------------------------------------


def bind_listener(host: str, port: int) -> socket.socket:
    """The listening socket for `[metrics] listen`, bound at start so that a port in use refuses the start (nothing
    recorded); raises OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(16)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class MetricsServer:
    """GET /metrics over HTTP/1.1 on a bound socket (`bind_listener`); `serve` runs until cancelled, as one of the
    station's supervised tasks, and closes the socket when it ends."""

    _MAX_HEAD = 8192
    _READ_TIMEOUT_S = 5.0

    def __init__(self, registry: CollectorRegistry, sock: socket.socket) -> None:
        self.registry = registry
        self.socket = sock
        self.address: tuple[str, int] = sock.getsockname()[:2]

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    def close(self) -> None:
        self.socket.close()

    async def serve(self) -> None:
        if self.socket.fileno() == -1:  # restarted after a failure: the last server closed the socket
            self.socket = bind_listener(*self.address)
        server = await asyncio.start_server(self._answer, sock=self.socket, limit=self._MAX_HEAD)
        async with server:
            await server.serve_forever()

    def _exposition(self) -> tuple[str, bytes, str]:
        try:
            return "200 OK", generate_latest(self.registry), CONTENT_TYPE_LATEST
        except Exception:
            # A fault in a collector costs the scrape, never the station.
            log.exception("collecting the metrics failed")
            return "500 Internal Server Error", b"collecting the metrics failed\n", "text/plain; charset=utf-8"

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self._READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                status, body, kind = "405 Method Not Allowed", b"GET /metrics only\n", "text/plain; charset=utf-8"
            elif path != "/metrics":
                status, body, kind = "404 Not Found", b"GET /metrics only\n", "text/plain; charset=utf-8"
            else:
                status, body, kind = self._exposition()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode("latin-1")
                + (b"" if method == "HEAD" else body)
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a client that said nothing useful, or went away: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
