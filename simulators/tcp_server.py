"""A TCP server for the simulator side: every connection is handed to a handler as a `Transport`.

This is how a simulated hub stands in for a networked jig controller (`tcp://host:port` on the station side).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from drivers.transport import Transport

__all__ = ["TcpJigServer", "serve_tcp"]

_READ_LIMIT = 1 << 20


class TcpJigServer:
    """A listening server; `url` is what the station opens. Closing it also ends the connections it is serving."""

    def __init__(self, handler: Callable[[Transport], Awaitable[None]]) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def host(self) -> str:
        return str(self._sockname()[0])

    @property
    def port(self) -> int:
        return int(self._sockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    def _sockname(self) -> tuple[Any, ...]:
        assert self._server is not None, "server not started"
        return tuple(self._server.sockets[0].getsockname())

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._connected, host, port, limit=_READ_LIMIT)

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        transport = Transport(reader, writer, f"tcp connection from {peer}")
        # The handler runs in a task of our own: cancelling the task asyncio gave this callback makes Python 3.11's
        # StreamReaderProtocol log a spurious CancelledError.
        handler = asyncio.create_task(self._serve(transport), name=transport.description)
        self._tasks.add(handler)
        try:
            await asyncio.wait({handler})
        finally:
            handler.cancel()
            self._tasks.discard(handler)
            await transport.close()
        if not handler.cancelled():
            handler.result()

    async def _serve(self, transport: Transport) -> None:
        await self._handler(transport)

    async def close(self) -> None:
        """Stop listening and cancel the handlers still running."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> TcpJigServer:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


async def serve_tcp(
    handler: Callable[[Transport], Awaitable[None]], host: str = "127.0.0.1", port: int = 0
) -> TcpJigServer:
    """Listen on `host:port` (port 0 picks a free one) and serve each connection with `handler`."""
    server = TcpJigServer(handler)
    await server.start(host, port)
    return server
