"""The transport seam: every way of reaching a jig is an asyncio reader/writer pair.

Serial ports, ptys, TCP sockets, USB bulk endpoints and the simulator's in-memory links all end up as a
`Transport`; the maintenance-port protocol reads and writes it and never learns which kind it has. A transport with
a UART behind it that the station can drive (a serial port; the simulator's emulated lines) also offers
`BaudRateControl`, the one rate capability: the rate in use, and a switch.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["BaudRateControl", "Transport"]


@dataclass
class Transport:
    """One open byte stream to one jig. `description` says where it goes, for logs and errors."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    description: str

    async def close(self, *, flush_timeout: float = 2.0) -> None:
        """Close, giving queued output `flush_timeout` seconds to leave; a far end that stops reading cannot hang us."""
        self.writer.close()
        closed = asyncio.ensure_future(self.writer.wait_closed())
        # The far end may already be gone (a pulled cable, a killed simulator); closing must still succeed.
        with contextlib.suppress(OSError):
            try:
                await asyncio.wait_for(asyncio.shield(closed), flush_timeout)
            except TimeoutError:
                self.writer.transport.abort()
                await closed


@runtime_checkable
class BaudRateControl(Protocol):
    """A line whose rate can be changed while it is open: a UART, or an emulation of one."""

    @property
    def baudrate(self) -> int:
        """The rate in use, in baud."""
        ...

    async def set_baudrate(self, rate: int) -> None:
        """Send what is already written at the old rate, then switch; on failure the old rate stays in force."""
        ...
