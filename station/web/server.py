"""The bench page's server: where it listens, TLS, and uvicorn run as one of the station's supervised tasks.

`WebServer.check` runs at start-up, before anything is recorded: an address other than loopback without a
certificate and key is refused, and so are files that do not load. `serve` binds (a port that is taken is said once
and tried again by the station's supervisor: the bench goes on without its page), announces the URL
(`web_listening`), and serves until cancelled; then every event stream is ended and uvicorn is given a quarter of a
second, so that SIGTERM still stops the station within two seconds. uvicorn's own signal handling is switched off:
the station's handlers drain the bench.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn
from prometheus_client import CollectorRegistry

from firmware_catalog.catalog import Offer
from station.config import StationConfig, WebConfig
from station.event_log import Emit, Event
from station.listen_address import is_loopback
from station.live_state import LiveState
from station.store import Store
from station.web.application import BenchPage, build_app
from station.web.bench_actions import BenchActions
from station.web.fleet_page import FleetSource
from station.web.sessions import SessionBook

__all__ = ["WebServer", "WebSettingsRefused"]


class WebSettingsRefused(Exception):
    """The `[web]` section cannot be served as it is (one line naming the option)."""


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the station owns SIGINT and SIGTERM (a drain), not uvicorn


class WebServer:
    def __init__(
        self,
        config: StationConfig,
        live: LiveState,
        store: Store,
        emit: Emit,
        wake: Callable[[], None] | None,
        metrics: CollectorRegistry | None = None,
        offer_catalog: Callable[[], Offer] | None = None,
        catalog_serial: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.settings = config.web
        self._cert, self._key = self.check(config)
        self._emit = emit
        self._wake = wake
        self.page = BenchPage(
            live=live,
            store=store,
            actions=BenchActions(store, config, self._changed, offer_catalog),
            station=config.station.id,
            tls=self._cert is not None,
            sessions=SessionBook(),
            metrics=metrics,
            catalog_serial=catalog_serial,
            fleet=FleetSource(config.fleet, config.resolve) if config.fleet is not None else None,
        )
        self.url: str | None = None

    @staticmethod
    def check(config: StationConfig) -> tuple[Path | None, Path | None]:
        web: WebConfig = config.web
        where = f"[web] in {config.source}"
        if (web.tls_cert is None) != (web.tls_key is None):
            raise WebSettingsRefused(f"{where}: tls_cert and tls_key go together")
        if web.tls_cert is None or web.tls_key is None:
            if not is_loopback(web.host):
                raise WebSettingsRefused(
                    f"{where}: listen = {web.listen!r} is not a loopback address: it needs tls_cert and tls_key "
                    "(the PIN and the session cross the network)"
                )
            return None, None
        cert, key = config.resolve(web.tls_cert), config.resolve(web.tls_key)
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise WebSettingsRefused(f"{where}: tls_cert {cert} / tls_key {key}: {exc}") from exc
        return cert, key

    def _changed(self) -> None:
        self.page.order_version += 1
        self.page.live.changed()
        if self._wake is not None:
            self._wake()

    def _bind(self) -> socket.socket:
        host, port = self.settings.host, self.settings.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        sock.listen(128)
        sock.setblocking(False)
        return sock

    async def serve(self) -> None:
        backoff, said = 1.0, False
        while True:
            try:
                sock = self._bind()
                break
            except OSError as exc:
                if not said:
                    self._emit(Event.WARNING, message=f"the bench page cannot listen on {self.settings.listen}: "
                               f"{exc.strerror or exc}; trying again (the bench goes on without it)")  # fmt: skip
                    said = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
        bound = sock.getsockname()
        scheme = "https" if self._cert is not None else "http"
        host = f"[{bound[0]}]" if sock.family == socket.AF_INET6 else bound[0]
        self.url = f"{scheme}://{host}:{bound[1]}/"
        self.page.closing = False
        config = uvicorn.Config(
            build_app(self.page),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=0,  # the SSE streams end themselves (page.close); nothing else is long
            ssl_certfile=self._cert,
            ssl_keyfile=self._key,
        )
        server = _Server(config)
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        self._emit(Event.WEB_LISTENING, url=self.url)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            self.page.close()
            server.should_exit = True
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 1.0)
            raise
        finally:
            sock.close()
