"""The windowed transfer engine: an image to the hub as DATA frames, go-back-N over byte offsets.

Rules (docs/maintenance-port.md, "Transfer"):
- Up to `window` DATA frames are in flight. Each carries the image offset it starts at; the hub takes a frame only
  at the offset it expects next and answers every frame with ACK(next_offset), cumulative.
- A gap makes the hub send one NAK(next_offset); the engine goes back to that offset. A NAK that cannot yet reflect
  the frame last sent at that offset (that frame has not finished leaving the station's line plus one smoothed
  round trip) is ignored.
- Every frame's clock starts when its last byte leaves the station's line, as `send` models it (the line time of
  the frames queued ahead of it, at the line's rate), never when it was handed to the transport: a slow line never
  looks like a lost frame. No progress for one retransmission timeout after that (RFC 6298 estimator over
  acknowledged, never-retransmitted frames, doubled on each expiry) goes back to the last acknowledged offset.
- Every go-back without progress, by timer or by NAK, is a stall; after a stall the engine probes with one frame
  until the hub takes data again. More than `max_stalls` stalls in a row, or more than (max_stalls + 1) x window
  NAKs without progress, ends the transfer: `DataRejected` when the hub's NAKs rejected the data itself (bad data,
  beyond the end), else `LinkTimeout`.
- Data below the acknowledged offset is never sent again, and a transfer starts at the hub's resume offset.
- Compression: raw DEFLATE of each chunk with the preceding 32 KiB of the image as preset dictionary, so every frame
  decodes on its own and resuming needs no shared state. A chunk whose DEFLATE is not smaller goes raw; if the whole
  image does not shrink, the transfer is declared uncompressed.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from drivers.errors import DataRejected, LinkClosed, LinkError, LinkTimeout, ProtocolError
from drivers.frame import Compression, Flag, Frame, MessageType, NakReason, encode_message
from drivers.jig_driver import ImageEncoding, Progress, TransferStats

__all__ = ["DATA_HEADER_SIZE", "DICTIONARY_SIZE", "TransferEngine", "choose_compression"]

DICTIONARY_SIZE = 32 * 1024
DATA_HEADER_SIZE = 9  # offset u32, raw_length u32, encoding u8
_LEVEL = 6
# How the seam's transfer statistics name each encoding (drivers.jig_driver).
_ENCODINGS = {Compression.NONE: ImageEncoding.NONE, Compression.DEFLATE: ImageEncoding.DEFLATE}


def choose_compression(image: bytes) -> Compression:
    """DEFLATE when it makes the image smaller, else none."""
    return Compression.DEFLATE if len(zlib.compress(image, _LEVEL)) < len(image) else Compression.NONE


@dataclass
class _Chunk:
    offset: int
    end: int
    payload: bytes


@dataclass
class _Sent:
    chunk: _Chunk
    seq: int
    # When the frame's last byte leaves the station's line (loop time): its round trip starts there.
    sent_at: float
    retransmission: bool


# The same offset always gives the same chunk, so a retransmission never recompresses.
class _Chunker:
    def __init__(self, image: bytes, payload_size: int, compression: Compression) -> None:
        self.image = image
        self.room = payload_size - DATA_HEADER_SIZE
        self.compression = compression
        self._ratio = 2.0
        self._cache: dict[int, _Chunk] = {}

    def at(self, offset: int) -> _Chunk:
        chunk = self._cache.get(offset)
        if chunk is None:
            chunk = self._cache[offset] = self._build(offset)
        return chunk

    def forget_below(self, offset: int) -> None:
        for key in [k for k in self._cache if k < offset]:
            del self._cache[key]

    def _build(self, offset: int) -> _Chunk:
        image, room = self.image, self.room
        if self.compression == Compression.DEFLATE:
            take = min(len(image) - offset, max(room, int(room * self._ratio * 0.9)))
            for _ in range(3):
                raw = image[offset : offset + take]
                packed = self._deflate(offset, raw)
                if len(packed) <= room:
                    if len(packed) < len(raw):
                        self._ratio = 0.7 * self._ratio + 0.3 * (len(raw) / max(1, len(packed)))
                        return self._make(offset, raw, Compression.DEFLATE, packed)
                    break
                take = max(1, take * room * 95 // (100 * len(packed)))
            self._ratio = max(1.0, 0.7 * self._ratio + 0.3)
        raw = image[offset : offset + room]
        return self._make(offset, raw, Compression.NONE, raw)

    def _deflate(self, offset: int, raw: bytes) -> bytes:
        dictionary = self.image[max(0, offset - DICTIONARY_SIZE) : offset]
        if dictionary:
            packer = zlib.compressobj(_LEVEL, zlib.DEFLATED, -15, zdict=dictionary)
        else:
            packer = zlib.compressobj(_LEVEL, zlib.DEFLATED, -15)
        return packer.compress(raw) + packer.flush()

    @staticmethod
    def _make(offset: int, raw: bytes, encoding: Compression, data: bytes) -> _Chunk:
        payload = encode_message(MessageType.DATA, offset=offset, raw_length=len(raw), encoding=encoding, data=data)
        return _Chunk(offset, offset + len(raw), payload)


# NAKs that say the hub will not take the data itself, as opposed to a gap (a lost frame) or a reset.
_REJECTING = {NakReason.BAD_DATA, NakReason.BEYOND_END}

# `send` writes a frame and may return when its last byte will have left the station's line (loop time); None means
# "now" (a transport with no line to model).
Send = Callable[[Frame], Awaitable[float | None]]


class TransferEngine:
    """Sends `image` from `start` through `send`, reading the hub's ACK/NAK frames from `inbox` (None = link gone)."""

    def __init__(
        self,
        image: bytes,
        *,
        start: int,
        payload_size: int,
        window: int,
        compression: Compression,
        send: Send,
        next_seq: Callable[[], int],
        inbox: asyncio.Queue[Frame | None],
        progress: Progress | None = None,
        initial_rto_s: float = 1.0,
        min_rto_s: float = 0.2,
        max_rto_s: float = 10.0,
        max_stalls: int = 6,
    ) -> None:
        if not 0 <= start <= len(image):
            raise ValueError(f"start {start} is outside the image (0..{len(image)})")
        self.image = image
        self.window = max(1, window)
        self.stats = TransferStats(len(image), start, _ENCODINGS[compression])
        self._chunks = _Chunker(image, payload_size, compression)
        self._send = send
        self._next_seq = next_seq
        self._inbox = inbox
        self._progress = progress
        self._acked = start
        self._next = start
        self._highest_sent = start
        self._inflight: deque[_Sent] = deque()
        self._rto = initial_rto_s
        self._min_rto = min_rto_s
        self._max_rto = max_rto_s
        self._max_stalls = max_stalls
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._stalls = 0
        self._naks = 0
        self._rejected: NakReason | None = None
        self._progress_at = 0.0

    async def run(self) -> TransferStats:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        self._progress_at = loop.time()
        total = len(self.image)
        if self._progress:
            self._progress(self._acked, total)
        while self._acked < total:
            await self._fill(loop)
            if self._inbox.empty():
                oldest = self._inflight[0].sent_at if self._inflight else loop.time()
                wait = max(self._progress_at, oldest) + self._rto - loop.time()
                try:
                    self._take(await asyncio.wait_for(self._inbox.get(), timeout=max(0.0, wait)), loop)
                except TimeoutError:
                    # A starved event loop fires the timer and delivers late ACKs in the same turn: let them in
                    # first. (They must be read from the queue directly: with a zero timeout wait_for never
                    # returns a queued item, which would spin here forever.)
                    await asyncio.sleep(0)
                    if self._inbox.empty():
                        self._expire()
                        continue
            while not self._inbox.empty():
                self._take(self._inbox.get_nowait(), loop)
        self.stats.elapsed_s = time.perf_counter() - started
        self.stats.acknowledged = self._acked
        return self.stats

    async def _fill(self, loop: asyncio.AbstractEventLoop) -> None:
        total = len(self.image)
        # After a stall, one frame at a time until the hub takes data again: a hub that refuses it, or a link that
        # loses it, is not fed a window of frames that can only be thrown away.
        window = 1 if self._stalls else self.window
        while len(self._inflight) < window and self._next < total:
            chunk = self._chunks.at(self._next)
            again = chunk.offset < self._highest_sent
            seq = self._next_seq()
            frame = Frame(MessageType.DATA, seq, 0, chunk.payload, Flag.RETRANSMISSION if again else Flag.NONE)
            sent = _Sent(chunk, seq, loop.time(), again)
            self._inflight.append(sent)
            self._next = chunk.end
            self._highest_sent = max(self._highest_sent, chunk.end)
            self.stats.frames += 1
            self.stats.retransmitted_frames += again
            self.stats.data_bytes += len(chunk.payload) + 18
            self.stats.image_bytes_sent += chunk.end - chunk.offset
            leaves = await self._send(frame)
            if leaves is not None:
                sent.sent_at = leaves

    def _expire(self) -> None:
        self.stats.timeouts += 1
        self._rto = min(self._rto * 2, self._max_rto)
        self._stall()
        self._rewind(self._acked)

    def _stall(self) -> None:
        """A go-back without progress: counted, and too many in a row end the transfer."""
        self._stalls += 1
        self.stats.stalls += 1
        if self._stalls > self._max_stalls or self._naks > (self._max_stalls + 1) * self.window:
            self._give_up()

    def _give_up(self) -> None:
        total = len(self.image)
        if self._rejected is not None:
            raise DataRejected(
                self._acked,
                int(self._rejected),
                self._naks,
                f"the hub rejects the data at byte {self._acked} of {total}: {self._naks} NAKs "
                f"(last {self._rejected.name}) and {self._stalls} go-backs without taking a byte",
            )
        raise LinkTimeout(
            f"no progress past byte {self._acked} of {total} after {self._stalls} go-backs "
            f"({self.stats.timeouts} timeouts, {self._naks} NAKs; timeout now {self._rto:.2f} s)"
        )

    def _rewind(self, offset: int) -> None:
        self._inflight.clear()
        self._next = offset

    def _take(self, frame: Frame | None, loop: asyncio.AbstractEventLoop) -> None:
        if frame is None:
            raise LinkClosed(f"the link closed during the transfer, at byte {self._acked} of {len(self.image)}")
        message = frame.message()
        now = loop.time()
        if frame.type == MessageType.ACK:
            self._sample_rtt(frame.ack, now)
            self._advance(message.next_offset, now)
        elif frame.type == MessageType.NAK:
            self.stats.naks += 1
            if message.reason == NakReason.NO_TRANSFER:
                raise LinkError("the hub has no transfer open (it reset or aborted); begin-transfer again to resume")
            if self._advance(message.next_offset, now):
                return
            # No progress: the NAK counts whatever it leads to, and says why the hub did not take the data.
            self._naks += 1
            try:
                reason = NakReason(message.reason)
            except ValueError:
                reason = None
            if reason in _REJECTING:
                self._rejected = reason
            target = message.next_offset
            recent = any(s.chunk.offset == target and now < s.sent_at + (self._srtt or 0.0) for s in self._inflight)
            if recent:
                if self._naks > (self._max_stalls + 1) * self.window:
                    self._give_up()
                return
            self._stall()
            self._rewind(target)

    def _advance(self, offset: int, now: float) -> bool:
        """Take the hub's next_offset; True when it is progress."""
        if offset > self._highest_sent or offset > len(self.image):
            raise ProtocolError(f"hub acknowledged byte {offset}, beyond the {self._highest_sent} bytes sent")
        if offset < self._acked:
            # The hub has forgotten what it acknowledged; resuming from the hub's view is the only safe course.
            raise ProtocolError(f"hub went back from acknowledged byte {self._acked} to {offset}")
        if offset == self._acked:
            return False
        self._acked = offset
        self._progress_at = now
        self._stalls = 0
        self._naks = 0
        self._rejected = None
        while self._inflight and self._inflight[0].chunk.end <= offset:
            self._inflight.popleft()
        if (self._inflight and self._inflight[0].chunk.offset < offset) or self._next < offset:
            self._rewind(offset)
        self._chunks.forget_below(offset)
        if self._progress:
            self._progress(offset, len(self.image))
        return True

    def _sample_rtt(self, seq: int, now: float) -> None:
        for sent in self._inflight:
            if sent.seq == seq:
                if not sent.retransmission:
                    self._update_rto(max(0.0, now - sent.sent_at))
                return

    def _update_rto(self, rtt: float) -> None:
        if self._srtt is None:
            self._srtt, self._rttvar = rtt, rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt
        self._rto = min(self._max_rto, max(self._min_rto, self._srtt + 4 * self._rttvar))
