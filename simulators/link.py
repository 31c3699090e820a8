"""An in-memory, cross-wired pair of transports that behaves like a UART behind a USB adapter.

Each direction is paced at baud/10 bytes per second (8N1) and delayed by its own latency (1 ms for a good adapter,
16 ms for an FTDI chip's default latency timer). Bytes can be flipped or dropped at a given rate from a seeded
generator. Each end has its own baud rate: while the two ends disagree, or either is above what the link can carry
(`max_baud`), what arrives is noise, as on a real wire.

It costs little CPU: a write is cut into chunks of about 2 ms of line time and each chunk is delivered by one timer
at the moment its last byte would arrive; there is no task per byte or per link.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

from drivers.transport import Transport

__all__ = ["Link", "LinkEnd", "LinkSettings", "open_link"]

_CHUNK_SECONDS = 0.002
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024


@dataclass(frozen=True)
class LinkSettings:
    """How the emulated wire behaves. Latencies are per direction; rates are per byte, from `seed`."""

    baud: int = 921_600
    latency_to_hub_s: float = 0.001
    latency_to_station_s: float = 0.001
    error_rate: float = 0.0
    drop_rate: float = 0.0
    seed: int = 0
    max_baud: int | None = None

    def __post_init__(self) -> None:
        if self.baud <= 0:
            raise ValueError(f"baud must be positive, got {self.baud}")
        for name in ("latency_to_hub_s", "latency_to_station_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("error_rate", "drop_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


class LinkEnd(asyncio.Transport):
    """One end of the link: an asyncio transport whose writes arrive, paced and impaired, at the other end."""

    def __init__(self, link: Link, name: str, latency_s: float, seed: int) -> None:
        super().__init__()
        self.link = link
        self.name = name
        self.baud = link.settings.baud
        self.latency_s = latency_s
        self.bytes_written = 0
        self.peer: LinkEnd | None = None
        self._loop = asyncio.get_running_loop()
        self._protocol: asyncio.BaseProtocol | None = None
        self._rng = random.Random(seed)
        self._line_free = 0.0
        self._closing = False
        self._lost = False
        self._epoch = 0
        self._writing_paused = False
        self._next_error = self._gap(link.settings.error_rate)
        self._next_drop = self._gap(link.settings.drop_rate)

    def _gap(self, rate: float) -> float:
        return self._rng.expovariate(rate) if rate > 0 else float("inf")

    # drivers.transport.BaudRateControl: each end is a UART the station or the hub can switch.

    @property
    def baudrate(self) -> int:
        return self.baud

    async def set_baudrate(self, rate: int) -> None:
        """Change this end's rate, as a UART driver would; bytes already on the wire keep the old one."""
        if rate <= 0:
            raise ValueError(f"baud must be positive, got {rate}")
        self.baud = rate

    # asyncio.Transport

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": f"link:{self.peer.name if self.peer else '?'}"}.get(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def is_closing(self) -> bool:
        return self._closing

    def is_reading(self) -> bool:
        return not self._lost

    def pause_reading(self) -> None:
        # The reader's buffer is bounded by the protocol's window; holding bytes here would add nothing.
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return max(0, int((self._line_free - self._loop.time()) * self.baud / 10))

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return _LOW_WATER, _HIGH_WATER

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self.peer is None:
            return
        data = bytes(data)
        self.bytes_written += len(data)
        rate = self.baud / 10
        chunk = max(64, int(rate * _CHUNK_SECONDS))
        at = max(self._loop.time(), self._line_free)
        for start in range(0, len(data), chunk):
            piece = data[start : start + chunk]
            at += len(piece) / rate
            self._loop.call_at(at + self.latency_s, self.peer._deliver, self._impair(piece), self.baud, self._epoch)
        self._line_free = at
        if not self._writing_paused and self.get_write_buffer_size() > _HIGH_WATER:
            self._writing_paused = True
            assert isinstance(self._protocol, asyncio.Protocol)
            self._protocol.pause_writing()
            self._loop.call_at(self._line_free - _LOW_WATER / rate, self._resume_writing)

    def _resume_writing(self) -> None:
        if self._writing_paused and not self._lost:
            self._writing_paused = False
            assert isinstance(self._protocol, asyncio.Protocol)
            self._protocol.resume_writing()

    def _impair(self, piece: bytes) -> bytes:
        settings = self.link.settings
        if settings.error_rate == 0 and settings.drop_rate == 0:
            return piece
        out = bytearray(piece)
        self._next_error -= len(piece)
        while self._next_error < 0:
            at = len(piece) + int(self._next_error)
            out[at] ^= 1 << self._rng.randrange(8)
            self._next_error += 1 + self._gap(settings.error_rate)
        self._next_drop -= len(piece)
        drops = []
        while self._next_drop < 0:
            drops.append(len(piece) + int(self._next_drop))
            self._next_drop += 1 + self._gap(settings.drop_rate)
        for at in sorted(set(drops), reverse=True):
            del out[at]
        return bytes(out)

    def _deliver(self, piece: bytes, baud: int, epoch: int) -> None:
        sender = self.peer
        if self._lost or sender is None or epoch != sender._epoch:
            return
        limit = self.link.settings.max_baud
        if baud != self.baud or (limit is not None and max(baud, self.baud) > limit):
            piece = self._rng.randbytes(len(piece))
        assert isinstance(self._protocol, asyncio.Protocol)
        self._protocol.data_received(piece)

    def close(self) -> None:
        """Close after every byte already written has arrived; the far end then reads EOF."""
        if self._closing:
            return
        self._closing = True
        # A hair after the last chunk: timers due at the same instant run in no guaranteed order.
        delay = max(self._line_free, self._loop.time()) + self.latency_s + 1e-4
        self._loop.call_at(delay, self.link._hang_up)

    def abort(self) -> None:
        """Cut the wire now: bytes in flight are lost and both ends see the connection go."""
        self._closing = True
        self.link._hang_up()

    def _lose(self) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._epoch += 1
        if self._protocol is not None:
            self._protocol.connection_lost(None)


class Link:
    """A cross-wired pair: `station` and `hub` are the Transports each side uses."""

    def __init__(self, settings: LinkSettings | None = None) -> None:
        self.settings = settings or LinkSettings()
        self.station_end = LinkEnd(self, "station", self.settings.latency_to_hub_s, self.settings.seed * 2 + 1)
        self.hub_end = LinkEnd(self, "hub", self.settings.latency_to_station_s, self.settings.seed * 2 + 2)
        self.station_end.peer = self.hub_end
        self.hub_end.peer = self.station_end
        self.station = _open(self.station_end, "sim link (station end)")
        self.hub = _open(self.hub_end, "sim link (hub end)")

    def cut(self) -> None:
        """Pull the cable."""
        self._hang_up()

    def _hang_up(self) -> None:
        self.station_end._lose()
        self.hub_end._lose()


def _open(end: LinkEnd, description: str) -> Transport:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    end.set_protocol(protocol)
    protocol.connection_made(end)
    writer = asyncio.StreamWriter(end, protocol, reader, loop)
    return Transport(reader, writer, description)


def open_link(settings: LinkSettings | None = None) -> Link:
    """Make a link; call from inside the event loop that will use it."""
    return Link(settings)
