"""A byte stream over a character device's file descriptor (a serial port, either end of a pty).

asyncio's own Unix pipe transports accept character devices (`loop.connect_read_pipe` / `connect_write_pipe`), so
the event loop does the non-blocking reads and writes, partial writes, buffering and flow control; nothing here
reimplements them. Each direction gets its own `os.dup` of the descriptor so that each transport can close its copy;
the caller's descriptor stays the caller's, and `on_close` tells the caller when both directions are done with it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from drivers.transport import Transport

__all__ = ["open_char_device"]

# A frame window of several 4 KiB frames must fit before StreamReader pauses the read transport.
_READ_LIMIT = 1 << 20


class _WriteSide(asyncio.streams.FlowControlMixin):
    """Flow control for the write pipe, plus the close waiter `StreamWriter.wait_closed` needs.

    `FlowControlMixin` alone raises NotImplementedError from `_get_close_waiter`; the write side also owns tearing
    down the read side, because `StreamWriter.close()` only reaches the write transport.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, on_close: Callable[[], None] | None) -> None:
        super().__init__(loop)
        self._closed: asyncio.Future[None] = loop.create_future()
        self._on_close = on_close
        self.read_transport: asyncio.ReadTransport | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        try:
            if self.read_transport is not None:
                self.read_transport.close()
            if self._on_close is not None:
                self._on_close()
        finally:
            if not self._closed.done():
                self._closed.set_result(None)

    def _get_close_waiter(self, stream: asyncio.StreamWriter) -> asyncio.Future[None]:
        return self._closed


async def open_char_device(
    fd: int, description: str, *, on_close: Callable[[], None] | None = None, limit: int = _READ_LIMIT
) -> Transport:
    """Return a `Transport` reading and writing the character device open on `fd`.

    `fd` is not taken over (it is duplicated); it is set non-blocking, which its duplicates share. `on_close` runs
    once on the event loop after the transport has closed its own descriptors, e.g. to close the pyserial port.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    read_protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    write_side = _WriteSide(loop, on_close)
    read_file = os.fdopen(os.dup(fd), "rb", buffering=0)
    write_file = os.fdopen(os.dup(fd), "wb", buffering=0)
    try:
        read_transport, _ = await loop.connect_read_pipe(lambda: read_protocol, read_file)
    except BaseException:
        read_file.close()
        write_file.close()
        raise
    try:
        write_transport, _ = await loop.connect_write_pipe(lambda: write_side, write_file)
    except BaseException:
        read_transport.close()
        write_file.close()
        raise
    write_side.read_transport = read_transport
    writer = asyncio.StreamWriter(write_transport, write_side, reader, loop)
    return Transport(reader, writer, description)
