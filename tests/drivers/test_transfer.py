"""The transfer engine against a minimal go-back-N receiver written here: compression choice and chunking, the
engine's timer rules, and the stall budget (timeouts and NAKs without progress)."""

from __future__ import annotations

import asyncio
import itertools
import os
import zlib

import pytest

from drivers.errors import DataRejected, LinkTimeout
from drivers.frame import Compression, Frame, MessageType, NakReason
from drivers.transfer import DICTIONARY_SIZE, TransferEngine, choose_compression


class Receiver:
    """Takes DATA at the offset it expects and acknowledges cumulatively, one event-loop turn later."""

    def __init__(self, inbox: asyncio.Queue[Frame | None]) -> None:
        self.inbox = inbox
        self.image = bytearray()

    async def send(self, frame: Frame) -> None:
        m = frame.message()
        if m.offset == len(self.image):
            data = bytes(m.data)
            if m.encoding == Compression.DEFLATE:
                dictionary = bytes(self.image[-DICTIONARY_SIZE:])
                inflater = zlib.decompressobj(-15, zdict=dictionary) if dictionary else zlib.decompressobj(-15)
                data = inflater.decompress(data)
            assert len(data) == m.raw_length
            self.image += data
        ack = Frame.of(MessageType.ACK, 0, frame.seq, next_offset=len(self.image))
        asyncio.get_running_loop().call_soon(self.inbox.put_nowait, ack)


def _engine(image: bytes, receiver: Receiver, compression: Compression, **kw: float) -> TransferEngine:
    seq = itertools.count(1)
    return TransferEngine(
        image,
        start=0,
        payload_size=4096,
        window=4,
        compression=compression,
        send=receiver.send,
        next_seq=lambda: next(seq),
        inbox=receiver.inbox,
        **kw,  # type: ignore[arg-type]
    )


async def test_acks_queued_when_the_timer_expires_are_taken_not_spun_on() -> None:
    # A zero timeout made wait_for time out with ACKs already queued, and the engine spun on them forever.
    image = os.urandom(60_000)
    receiver = Receiver(asyncio.Queue())
    engine = _engine(image, receiver, Compression.NONE, initial_rto_s=0.0, min_rto_s=0.0, max_stalls=10_000)
    async with asyncio.timeout(10):
        stats = await engine.run()
    assert stats.acknowledged == len(image)
    assert bytes(receiver.image) == image


async def test_compressed_chunks_decode_on_their_own_and_shrink_the_transfer() -> None:
    image = b"".join(f"record {i:06d} value {i * 7919 % 1000:03d}\n".encode() for i in range(4000))
    assert choose_compression(image) == Compression.DEFLATE
    assert choose_compression(os.urandom(10_000)) == Compression.NONE
    receiver = Receiver(asyncio.Queue())
    stats = await _engine(image, receiver, Compression.DEFLATE).run()
    assert bytes(receiver.image) == image
    assert stats.data_bytes < len(image) / 3


class NakForever(Receiver):
    """A hub whose every flash write fails: every DATA frame is answered NAK(held, BAD_DATA)."""

    async def send(self, frame: Frame) -> None:
        nak = Frame.of(MessageType.NAK, 0, frame.seq, next_offset=len(self.image), reason=NakReason.BAD_DATA)
        asyncio.get_running_loop().call_later(0.002, self.inbox.put_nowait, nak)


class GapForever(Receiver):
    """A hub that keeps answering NAK(out of order) at the same offset: frames there never reach it."""

    async def send(self, frame: Frame) -> None:
        nak = Frame.of(MessageType.NAK, 0, frame.seq, next_offset=0, reason=NakReason.OUT_OF_ORDER)
        asyncio.get_running_loop().call_later(0.002, self.inbox.put_nowait, nak)


async def test_naks_without_progress_count_as_stalls_and_end_the_transfer() -> None:
    # Each NAK rewound and refilled the window, restarting the timer: a NAK-forever hub held the slot for ever.
    receiver = NakForever(asyncio.Queue())
    engine = _engine(os.urandom(60_000), receiver, Compression.NONE, max_stalls=6)
    async with asyncio.timeout(5):
        with pytest.raises(DataRejected) as caught:
            await engine.run()
    assert caught.value.offset == 0
    assert caught.value.reason == NakReason.BAD_DATA
    assert engine.stats.stalls == 7
    assert engine.stats.timeouts == 0
    # After the first stall the engine probes one frame at a time: the window is not refilled for a refusing hub.
    assert engine.stats.frames <= 4 + 6


async def test_naks_for_a_gap_that_never_fills_are_a_link_timeout() -> None:
    receiver = GapForever(asyncio.Queue())
    engine = _engine(os.urandom(60_000), receiver, Compression.NONE, max_stalls=3)
    async with asyncio.timeout(5):
        with pytest.raises(LinkTimeout, match="no progress past byte 0"):
            await engine.run()
    assert engine.stats.stalls == 4


class SlowLine(Receiver):
    """A line of `rate` bytes/s: each frame leaves after those queued ahead of it; its ACK comes 5 ms later."""

    def __init__(self, inbox: asyncio.Queue[Frame | None], rate: float) -> None:
        super().__init__(inbox)
        self.rate = rate
        self.free = 0.0

    async def send(self, frame: Frame) -> float:  # type: ignore[override]
        loop = asyncio.get_running_loop()
        self.free = max(loop.time(), self.free) + len(frame.encode()) / self.rate
        m = frame.message()
        if m.offset == len(self.image):
            self.image += bytes(m.data)
        ack = Frame.of(MessageType.ACK, 0, frame.seq, next_offset=len(self.image))
        loop.call_at(self.free + 0.005, self.inbox.put_nowait, ack)
        return self.free


async def test_the_timer_starts_when_a_frame_leaves_the_line_not_when_it_is_queued() -> None:
    # 4 KiB frames at 1920 bytes/s (19200 baud) take 2.1 s each, and a window of 4 queues 8.5 s of them: a timer
    # started at the write would expire on every frame after the first and resend what the hub already has.
    image = os.urandom(3 * 4087)
    receiver = SlowLine(asyncio.Queue(), rate=1920 * 4)  # four times faster than 19200 baud, same shape
    engine = _engine(image, receiver, Compression.NONE, initial_rto_s=0.2, min_rto_s=0.05)
    stats = await engine.run()
    assert bytes(receiver.image) == image
    assert (stats.retransmitted_frames, stats.timeouts, stats.stalls) == (0, 0, 0)
