"""One simulated hub served where a real jig would be: on a pty (pyserial opens the other end) or a TCP port.

Between the outside transport and the hub sits an emulated link (bytes paced at baud/10 per second, latency each
way), so that a station talking to `reflash sim hub` over a pty or TCP sees a UART's pace. The hub keeps its memory
between connections, as a powered hub does; after a power-loss fault the next connection powers it up again from
its state directory. Baud-rate switching is emulated only by the in-memory `sim` driver: through a pty or TCP the
outer side cannot follow the hub's rate, so a switch falls back to the previous rate, as the protocol prescribes.
"""

from __future__ import annotations

import asyncio
import contextlib

from drivers.transport import Transport
from simulators.hub import HubOptions, SimulatedHub
from simulators.link import LinkSettings, open_link
from simulators.pty_port import PtyPort, open_pty_port
from simulators.tcp_server import TcpJigServer, serve_tcp

__all__ = ["HubServer", "relay"]

_CHUNK = 65536


async def _pump(source: Transport, sink: Transport) -> None:
    while data := await source.reader.read(_CHUNK):
        sink.writer.write(data)
        await sink.writer.drain()


async def relay(a: Transport, b: Transport) -> None:
    """Copy bytes both ways until either side closes."""
    pumps = [asyncio.create_task(_pump(a, b)), asyncio.create_task(_pump(b, a))]
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


class HubServer:
    """Serves one hub, connection after connection."""

    def __init__(self, options: HubOptions, link: LinkSettings | None = None) -> None:
        self.options = options
        self.link_settings = link or LinkSettings()
        self.hub = SimulatedHub(options)
        self.connections = 0

    async def handle(self, outer: Transport) -> None:
        """Serve the hub to one connection, through the emulated link, until either side goes."""
        self.connections += 1
        if not self.hub.powered:
            self.hub = SimulatedHub(self.options)
        link = open_link(self.link_settings)
        hub_task = asyncio.create_task(self.hub.serve(link.hub, link.hub_end), name="simulated hub")
        relay_task = asyncio.create_task(relay(outer, link.station), name="hub relay")
        try:
            await asyncio.wait({hub_task, relay_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            link.cut()
            for task in (hub_task, relay_task):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def serve_tcp(self, host: str = "127.0.0.1", port: int = 0) -> TcpJigServer:
        return await serve_tcp(self.handle, host, port)

    async def serve_pty(self) -> tuple[PtyPort, asyncio.Task[None]]:
        """A pty whose other end (`port.path`) the station opens; served until the task is cancelled."""
        port = await open_pty_port("simulated hub")

        async def serve() -> None:
            # The pty stays open across the station's opens and closes: one long connection, served again after
            # the hub goes down (a power-loss fault) so that the next open finds it powered up.
            while True:
                await self.handle(port.transport)
                await asyncio.sleep(0.05)

        return port, asyncio.create_task(serve(), name="pty hub")
