"""The deframer: owns the receive buffer, finds whole CRC-checked frames in a byte stream, resyncs after noise.

Bytes arrive in arbitrary pieces. The deframer looks for the start-of-frame marker, checks the header CRC before
trusting the length, waits for the rest, and checks the frame CRC. Anything that fails is skipped one byte at a time
(never a whole claimed frame), so a good frame hidden behind garbage or a half-received frame is always found.
Whatever bytes it is fed, `feed` never raises.

Cost: linear in the bytes fed, whatever they are. The buffer is read from a position that only moves forward and is
compacted only when most of it has been consumed, so a false start costs one `find` step and one CRC over the 10
header bytes, never a copy of the buffer. A candidate whose header CRC passes costs at most one CRC over its frame
(at most `max_payload` + 14 bytes), once. A receive loop feeds through `slices` and yields to its event loop between
them, so no input, however hostile, holds the loop for longer than one slice's work.
"""

from __future__ import annotations

from collections.abc import Iterator

from drivers.errors import DeframeError, FrameError
from drivers.frame import (
    FRAME_FIELDS,
    FRAME_OVERHEAD,
    HEAD_SIZE,
    MAX_PAYLOAD,
    SOF,
    Frame,
    MessageType,
    frame_crc_ok,
    head_length,
    parse_frame,
)

__all__ = ["FEED_SLICE", "Deframer"]

# Bytes handed to `feed` between two yields of a receive loop (`Deframer.slices`). At the worst input (a header
# whose CRC passes every few bytes, each declaring the largest payload) a slice costs about a millisecond.
FEED_SLICE = 4096
# A candidate whose type byte is no message type is dropped before its CRC is computed: the same outcome (one byte
# skipped) as checking the CRCs first, at a fraction of the cost. `A5 5A` repeated has type 0xA5.
_TYPES = frozenset(int(kind) for kind in MessageType)
_TYPE_AT = int(next(field.offset for field in FRAME_FIELDS if field.name == "type"))
# Consumed bytes are dropped from the front of the buffer once there are this many (or the buffer is all consumed).
_COMPACT = 65536


class Deframer:
    """Turns a byte stream into frames. `discarded` counts bytes skipped, `rejected` candidate frames refused.

    Work counters, for tests and benchmarks: `candidates` (markers examined with a whole header's worth of bytes
    after them), `header_checks` (header CRCs computed), `payload_checks` (frame CRCs computed) and `crc_bytes`
    (bytes those frame CRCs covered) and `copied` (bytes copied out of or moved within the buffer).
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        if not 0 <= max_payload <= MAX_PAYLOAD:
            raise DeframeError(f"max_payload must be 0..{MAX_PAYLOAD}, got {max_payload}")
        self.max_payload = max_payload
        self.discarded = 0
        self.rejected = 0
        self.candidates = 0
        self.header_checks = 0
        self.payload_checks = 0
        self.crc_bytes = 0
        self.copied = 0
        self._buffer = bytearray()
        self._pos = 0  # bytes before it are consumed
        self._need = 0  # buffer length at which the candidate at _pos is complete; 0 when none is waiting

    @property
    def pending(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buffer) - self._pos

    def clear(self) -> None:
        self.discarded += self.pending
        self._buffer.clear()
        self._pos = 0
        self._need = 0

    def slices(self, data: bytes | bytearray | memoryview) -> Iterator[list[Frame]]:
        """Feed `data` FEED_SLICE bytes at a time, yielding each slice's frames: yield to the event loop between."""
        view = memoryview(data)
        for at in range(0, len(view), FEED_SLICE):
            yield self.feed(view[at : at + FEED_SLICE])

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Add received bytes; return every whole, valid frame they complete, in order."""
        buf = self._buffer
        buf += data
        if len(buf) < self._need:
            # The header at _pos is already checked; its payload is still arriving in small pieces.
            return []
        self._need = 0
        frames: list[Frame] = []
        pos = self._pos
        size = len(buf)
        while True:
            start = buf.find(SOF, pos)
            if start < 0:
                # A lone A5 at the end may be the first half of the next marker.
                keep = 1 if size > pos and buf[size - 1] == SOF[0] else 0
                self.discarded += size - pos - keep
                pos = size - keep
                break
            self.discarded += start - pos
            pos = start
            if size - pos < HEAD_SIZE:
                break
            self.candidates += 1
            if buf[pos + _TYPE_AT] not in _TYPES:
                pos = self._skip(pos)
                continue
            self.header_checks += 1
            length = head_length(buf, pos)
            if length is None or length > self.max_payload:
                pos = self._skip(pos)
                continue
            end = pos + FRAME_OVERHEAD + length
            if size < end:
                self._need = end
                break
            self.payload_checks += 1
            self.crc_bytes += end - pos - 4
            if not frame_crc_ok(buf, pos, end):
                pos = self._skip(pos)
                continue
            self.copied += end - pos
            try:
                # Both CRCs passed: only now the construct definition parses it (and refuses an unknown type).
                frames.append(parse_frame(bytes(buf[pos:end])))
            except FrameError:
                pos = self._skip(pos)
                continue
            pos = end
        self._compact(pos)
        return frames

    def _compact(self, pos: int) -> None:
        if pos == len(self._buffer):
            self._buffer.clear()
            pos = 0
        elif pos >= _COMPACT:
            self.copied += len(self._buffer) - pos
            del self._buffer[:pos]
            if self._need:
                self._need -= pos
            pos = 0
        self._pos = pos

    def _skip(self, pos: int) -> int:
        # Only the marker's first byte is dropped: the real frame may start inside what looked like this one.
        self.rejected += 1
        self.discarded += 1
        return pos + 1
