"""Serial ports through pyserial: local devices (`/dev/ttyUSB0`, a pty) and pyserial URLs (`rfc2217://`, `loop://`).

The choice of adapter, and why: pyserial opens and configures the port (termios, baud rate, exclusive lock) and
asyncio does the I/O. For a local device, `drivers.char_device` hands duplicates of pyserial's descriptor to the event
loop's own Unix pipe transports (`loop.connect_read_pipe` / `connect_write_pipe`, which accept character devices), so
partial writes, buffering, `drain()` flow control and EOF/EIO handling are the standard library's, tested far more
than any serial adapter. Neither known trap can happen there: pyserial-asyncio-fast 0.16 busy-loops after a partial
write and can stall the loop when a write fills the kernel buffer exactly (its PR #36 is still open), and
pyserial-asyncio 0.6 can trip an assertion in `_write_ready` (its issue #77); asyncio's pipe transport keeps a
writer callback only while its buffer is non-empty and has no such assertion. serialx was not used: it is not in the
package index this project installs from, and it would replace pyserial, which we keep for port configuration and URLs.

pyserial URL handlers without a descriptor to watch (`rfc2217://`, `loop://`, `spy://` around them) run blocking on
two threads of their own through `drivers.blocking_port`; pyserial's rfc2217 client is thread-safe for a reader and
a writer. (`socket://` is plain TCP and goes to `drivers.tcp_transport` instead, see `drivers.transport_url`.)

The baud rate can change on an open port (the maintenance-port protocol switches after sync, with fallback): a
`SerialTransport` is a `Transport` that also satisfies `drivers.transport.BaudRateControl`; the protocol checks
`isinstance(transport, BaudRateControl)` and never needs to know it is talking to a serial port.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import serial
import serial.serialposix

from drivers.blocking_port import open_blocking_port
from drivers.char_device import open_char_device
from drivers.transport import Transport

__all__ = ["SerialTransport", "open_serial"]

DEFAULT_BAUDRATE = 115200
# A blocking read returns after this long with nothing, so the port's reader thread notices a close.
_READ_TIMEOUT_S = 0.2
_DRAIN_POLL_S = 0.005


class _PyserialPort:
    """A pyserial port without a watchable descriptor, as a `BlockingPort`."""

    def __init__(self, port: serial.SerialBase) -> None:
        self._port = port

    def read(self) -> bytes:
        # One byte waits up to the timeout and returns as soon as anything arrives; then take what came with it.
        data: bytes = self._port.read(1)
        if data:
            # Every pyserial URL handler has in_waiting; SerialBase does not declare it.
            waiting = int(getattr(self._port, "in_waiting", 0))
            if waiting:
                data += self._port.read(waiting)
        return data

    def write(self, data: bytes) -> None:
        self._port.write(data)

    def close(self) -> None:
        self._port.close()


@dataclass
class SerialTransport(Transport):
    """A `Transport` over a pyserial port, with `BaudRateControl`."""

    port: serial.SerialBase = field(repr=False, kw_only=True)

    @property
    def baudrate(self) -> int:
        return int(self.port.baudrate)

    async def set_baudrate(self, rate: int, *, drain_timeout: float = 5.0) -> None:
        if rate <= 0:
            raise ValueError(f"{self.description}: baud rate must be positive, not {rate}")
        try:
            async with asyncio.timeout(drain_timeout):
                await self._wait_sent()
        except TimeoutError:
            raise TimeoutError(
                f"{self.description}: output not sent within {drain_timeout} s; baud rate not changed"
            ) from None
        previous = self.port.baudrate
        try:
            await self._apply(rate)
        except (ValueError, OSError, OverflowError) as exc:
            await self._apply(previous)
            raise ValueError(f"{self.description}: cannot switch to {rate} baud ({exc}); still at {previous}") from exc

    async def close(self, *, flush_timeout: float = 2.0) -> None:
        """Close the port, giving up on unsent output after `flush_timeout` (a stuck jig must not hang closing)."""
        self.writer.close()
        closed = asyncio.ensure_future(self.writer.wait_closed())
        try:
            # Shielded: a timeout must not cancel the close waiter that abort() is about to complete.
            await asyncio.wait_for(asyncio.shield(closed), flush_timeout)
        except TimeoutError:
            self.writer.transport.abort()
            with contextlib.suppress(ConnectionError, OSError):
                await closed
        except (ConnectionError, OSError):
            pass

    async def _apply(self, rate: int) -> None:
        if isinstance(self.port, serial.serialposix.Serial):
            self.port.baudrate = rate
        else:
            # rfc2217 waits for the server to confirm; never block the loop on the network.
            await asyncio.to_thread(setattr, self.port, "baudrate", rate)

    async def _wait_sent(self) -> None:
        # Bytes queued in asyncio or in the UART's kernel buffer would otherwise leave at the new rate.
        transport = self.writer.transport
        low, high = transport.get_write_buffer_limits()
        transport.set_write_buffer_limits(high=0)
        try:
            await self.writer.drain()
        finally:
            transport.set_write_buffer_limits(high=high, low=low)
        if isinstance(self.port, serial.serialposix.Serial):
            # Nothing signals that the kernel's transmit queue ran empty, and tcdrain() would pin a thread that
            # no timeout can free; polling it for the few milliseconds it takes is the cancellable way.
            while self.port.out_waiting > 0:  # noqa: ASYNC110
                await asyncio.sleep(_DRAIN_POLL_S)


async def open_serial(url: str, *, baudrate: int = DEFAULT_BAUDRATE, **options: Any) -> SerialTransport:
    """Open a serial device path or pyserial URL; `options` go to `serial.serial_for_url` (e.g. `rtscts=True`).

    A local device is locked (`exclusive=True`, flock) unless told otherwise, so two slots configured with the same
    port fail to open instead of corrupting each other's frames. Raises `serial.SerialException` (an `OSError`)
    naming the port when it cannot be opened.
    """
    if "://" not in url:
        options.setdefault("exclusive", True)
    port = await asyncio.to_thread(serial.serial_for_url, url, baudrate=baudrate, timeout=_READ_TIMEOUT_S, **options)
    try:
        if isinstance(port, serial.serialposix.Serial):
            base = await open_char_device(port.fileno(), f"serial {url}", on_close=port.close)
        else:
            base = await open_blocking_port(_PyserialPort(port), f"serial {url}")
    except BaseException:
        port.close()
        raise
    return SerialTransport(base.reader, base.writer, base.description, port=port)
