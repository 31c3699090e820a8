"""The deframer: owns the receive buffer, finds whole CRC-checked frames in a byte stream, resyncs after noise.

Bytes arrive in arbitrary pieces. The deframer looks for the start-of-frame marker, checks the header CRC before
trusting the length, waits for the rest, and checks the payload CRC. Anything that fails is skipped one byte at a time
(never a whole claimed frame), so a good frame hidden behind garbage or a half-received frame is always found.
Whatever bytes it is fed, `feed` never raises.
"""

from __future__ import annotations

from drivers.errors import DeframeError, FrameError
from drivers.frame import FRAME_OVERHEAD, HEADER_SIZE, MAX_PAYLOAD, SOF, Frame, parse_frame, parse_frame_head

__all__ = ["Deframer"]

_HEAD = HEADER_SIZE + 4


class Deframer:
    """Turns a byte stream into frames. `discarded` counts bytes skipped, `rejected` candidate frames refused."""

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        if not 0 <= max_payload <= MAX_PAYLOAD:
            raise DeframeError(f"max_payload must be 0..{MAX_PAYLOAD}, got {max_payload}")
        self.max_payload = max_payload
        self.discarded = 0
        self.rejected = 0
        self._buffer = bytearray()
        self._need = 0

    @property
    def pending(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buffer)

    def clear(self) -> None:
        self.discarded += len(self._buffer)
        self._buffer.clear()
        self._need = 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Add received bytes; return every whole, valid frame they complete, in order."""
        buf = self._buffer
        buf += data
        if len(buf) < self._need:
            # The header at the front is already checked; its payload is still arriving in small pieces.
            return []
        self._need = 0
        frames: list[Frame] = []
        pos = 0
        while True:
            start = buf.find(SOF, pos)
            if start < 0:
                # A lone A5 at the end may be the first half of the next marker.
                keep = 1 if buf[-1:] == SOF[:1] else 0
                self.discarded += len(buf) - pos - keep
                pos = len(buf) - keep
                break
            self.discarded += start - pos
            pos = start
            if len(buf) - pos < _HEAD:
                break
            try:
                head = parse_frame_head(bytes(buf[pos : pos + _HEAD]))
            except FrameError:
                pos = self._skip(pos)
                continue
            if head.length > self.max_payload:
                pos = self._skip(pos)
                continue
            end = pos + FRAME_OVERHEAD + head.length
            if len(buf) < end:
                self._need = end - pos
                break
            try:
                frames.append(parse_frame(bytes(buf[pos:end])))
            except FrameError:
                pos = self._skip(pos)
                continue
            pos = end
        del buf[:pos]
        return frames

    def _skip(self, pos: int) -> int:
        # Only the marker's first byte is dropped: the real frame may start inside what looked like this one.
        self.rejected += 1
        self.discarded += 1
        return pos + 1
