"""A simulated serial port: a real kernel pty whose slave path the station opens with pyserial.

The simulator speaks through the master side as a `Transport`. The slave is put in raw mode at once, so nothing the
simulator writes before the station opens the port is echoed or translated, and the simulator keeps its own slave
descriptor open for the port's whole life: without it the master reads EIO whenever the station closes the port, and
a station that reconnects would find the simulator gone.
"""

from __future__ import annotations

import contextlib
import os
import termios
import tty
from dataclasses import dataclass

from drivers.char_device import open_char_device
from drivers.transport import Transport

__all__ = ["PtyPort", "open_pty_port"]


@dataclass
class PtyPort:
    """One pty pair: `transport` is the simulator's end, `path` the device the station opens."""

    transport: Transport
    path: str
    _master_fd: int
    _slave_fd: int

    @property
    def baudrate(self) -> int:
        """The baud rate the station last set on its end (a pty keeps it though it does not pace bytes)."""
        speed = termios.tcgetattr(self._slave_fd)[5]
        return _BAUD_BY_SPEED.get(speed, 0)

    async def close(self) -> None:
        """Tear the port down at once, like a power cut: unsent output is dropped, never waited for."""
        if not self.transport.writer.is_closing():
            self.transport.writer.transport.abort()
        await self.transport.close()
        for fd in (self._master_fd, self._slave_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


_BAUD_BY_SPEED = {getattr(termios, f"B{rate}"): rate for rate in (9600, 19200, 38400, 57600, 115200, 230400)} | {
    getattr(termios, name): int(name[1:])
    for name in ("B460800", "B921600", "B1000000", "B1500000", "B2000000", "B3000000", "B4000000")
    if hasattr(termios, name)
}


async def open_pty_port(description: str = "simulated serial port") -> PtyPort:
    """Create a pty pair and return the simulator's `Transport` on the master with the slave's path."""
    master_fd, slave_fd = os.openpty()
    try:
        tty.setraw(slave_fd)
        path = os.ttyname(slave_fd)
        transport = await open_char_device(master_fd, f"{description} (pty master for {path})")
    except BaseException:
        os.close(master_fd)
        os.close(slave_fd)
        raise
    return PtyPort(transport, path, master_fd, slave_fd)
