"""The transfer engine against a minimal go-back-N receiver written here: compression choice and chunking, and
the engine's timer rules."""

from __future__ import annotations

import asyncio
import itertools
import os
import zlib

from drivers.frame import Compression, Frame, MessageType
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
