"""A byte stream over a blocking port (a pyusb device, a pyserial rfc2217 connection), driven by its own threads.

Some ports have no descriptor the event loop can watch, only blocking calls. Each such port gets two dedicated
threads of its own, named after it: a reader that blocks in `read()` and feeds the asyncio `StreamReader`, and a
writer that takes queued writes in order. Two rather than one so that a write never waits behind a read that is
blocked until its timeout (a single thread would add up to one read timeout of latency to every frame), and
dedicated rather than the loop's default executor so that a hung jig can never starve another jig of threads.

Flow control is asyncio's own: when the `StreamReader` is full it pauses this transport and the reader thread stops
reading (the device then NAKs, like real hardware); when too much is queued for writing, `drain()` waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from typing import Any, Protocol

from drivers.transport import Transport

__all__ = ["BlockingPort", "open_blocking_port"]

_READ_LIMIT = 1 << 20
_WRITE_HIGH_WATER = 256 * 1024
_WRITE_LOW_WATER = 64 * 1024
# How long a paused reader sleeps before looking again whether it was told to stop.
_PAUSED_POLL_S = 0.2


class BlockingPort(Protocol):
    """A blocking byte port. Both methods are called from the port's own threads, never from the event loop."""

    def read(self) -> bytes:
        """Block for at most a short timeout (a fraction of a second); return b"" when nothing arrived."""
        ...

    def write(self, data: bytes) -> None:
        """Write all of `data` or raise."""
        ...

    def close(self) -> None:
        """Release the port; called once, after both threads have stopped using it."""
        ...


class _ThreadedTransport(asyncio.Transport):
    def __init__(
        self, loop: asyncio.AbstractEventLoop, port: BlockingPort, protocol: asyncio.Protocol, name: str
    ) -> None:
        super().__init__()
        self._loop = loop
        self._port = port
        self._protocol = protocol
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._buffered = 0
        self._high_water = _WRITE_HIGH_WATER
        self._low_water = _WRITE_LOW_WATER
        self._writing_paused = False
        self._closing = False
        self._lost = False
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._reading = threading.Event()
        self._reading.set()
        self._reader = threading.Thread(target=self._read_loop, name=f"{name} reader", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name=f"{name} writer", daemon=True)

    def start(self) -> None:
        self._protocol.connection_made(self)
        self._reader.start()
        self._writer.start()

    # Called from the event loop.

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        chunk = bytes(data)
        self._buffered += len(chunk)
        self._queue.put(chunk)
        if not self._writing_paused and self._buffered > self._high_water:
            self._writing_paused = True
            self._protocol.pause_writing()

    def get_write_buffer_size(self) -> int:
        return self._buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low_water, self._high_water

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high_water = _WRITE_HIGH_WATER if high is None else high
        self._low_water = self._high_water // 4 if low is None else low
        if not self._writing_paused and self._buffered > self._high_water:
            self._writing_paused = True
            self._protocol.pause_writing()

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("a blocking port has no half-close")

    def pause_reading(self) -> None:
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    def is_reading(self) -> bool:
        return self._reading.is_set()

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._queue.put(None)

    def abort(self) -> None:
        self._discard_queue()
        self._stop.set()
        self.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"port": self._port}.get(name, default)

    def _written(self, count: int) -> None:
        self._buffered -= count
        if self._writing_paused and self._buffered <= self._low_water:
            self._writing_paused = False
            self._protocol.resume_writing()

    def _received(self, data: bytes) -> None:
        if not self._lost:
            self._protocol.data_received(data)

    def _connection_lost(self) -> None:
        if not self._lost:
            self._lost = True
            self._closing = True
            exc = self._error if isinstance(self._error, Exception) else None
            self._protocol.connection_lost(exc)

    # Called from the port's threads.

    def _discard_queue(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()

    def _call_soon(self, callback: Any, *args: Any) -> None:
        # The loop may already be closed when a thread finishes late; nobody is left to tell.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._stop.set()
        self._discard_queue()
        self._queue.put(None)

    def _read_loop(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._reading.wait(_PAUSED_POLL_S):
                    continue
                data = self._port.read()
                if data and not self._stop.is_set():
                    self._call_soon(self._received, data)
        except BaseException as exc:
            self._fail(exc)

    def _write_loop(self) -> None:
        try:
            while (chunk := self._queue.get()) is not None:
                if self._stop.is_set():
                    continue
                self._port.write(chunk)
                self._call_soon(self._written, len(chunk))
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._stop.set()
            self._reader.join()
            try:
                self._port.close()
            except Exception as exc:
                if self._error is None:
                    self._error = exc
            self._call_soon(self._connection_lost)


async def open_blocking_port(port: BlockingPort, description: str, *, limit: int = _READ_LIMIT) -> Transport:
    """Return a `Transport` over `port`, started with its reader and writer threads.

    Closing the transport sends what is already queued, stops both threads, then calls `port.close()`.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport = _ThreadedTransport(loop, port, protocol, description)
    transport.start()
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return Transport(reader, writer, description)
