"""The deframer against noise: random bytes, random splits, garbage before good frames."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.deframer import Deframer
from drivers.errors import DeframeError
from drivers.frame import SOF, Frame, MessageType

good_frames = st.lists(
    st.builds(
        Frame,
        type=st.sampled_from([MessageType.DATA, MessageType.ACK, MessageType.IDENTIFY]),
        seq=st.integers(0, 0xFFFF),
        ack=st.integers(0, 0xFFFF),
        payload=st.binary(max_size=300),
    ),
    min_size=1,
    max_size=6,
)
# Garbage rich in marker bytes, so that false starts are common.
garbage = st.lists(st.one_of(st.binary(max_size=40), st.just(SOF), st.just(SOF[:1])), max_size=6).map(b"".join)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


def _feed(deframer: Deframer, pieces: list[bytes]) -> list[Frame]:
    out: list[Frame] = []
    for piece in pieces:
        with contextlib.suppress(DeframeError):
            out.extend(deframer.feed(piece))
    return out


@settings(max_examples=200)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 10_000), max_size=20))
def test_random_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    deframer = Deframer()
    _feed(deframer, _split(data, cuts))
    assert deframer.pending <= len(data)


@settings(max_examples=200)
@given(st.lists(st.tuples(garbage, good_frames)), st.lists(st.integers(0, 100_000), max_size=30))
def test_good_frames_after_garbage_are_never_lost(chunks: list[tuple[bytes, list[Frame]]], cuts: list[int]) -> None:
    stream = b""
    expected: list[Frame] = []
    for noise, frames in chunks:
        stream += noise
        for frame in frames:
            stream += frame.encode()
            expected.append(frame)
    deframer = Deframer()
    assert _feed(deframer, _split(stream, cuts)) == expected


@settings(max_examples=100)
@given(good_frames, st.integers(0, 2**32), st.lists(st.integers(0, 100_000), max_size=10))
def test_a_corrupted_frame_is_dropped_and_the_next_one_kept(frames: list[Frame], seed: int, cuts: list[int]) -> None:
    rng = random.Random(seed)
    first = bytearray(frames[0].encode())
    first[rng.randrange(len(first))] ^= 1 << rng.randrange(8)
    stream = bytes(first) + b"".join(f.encode() for f in frames[1:])
    # Every single-bit flip lands in a CRC-covered field, a CRC or the marker: that frame goes, the rest arrive.
    assert _feed(Deframer(), _split(stream, cuts)) == frames[1:]


def test_oversized_claimed_length_does_not_stall() -> None:
    good = Frame.of(MessageType.ACK, 1, 0, next_offset=9).encode()
    deframer = Deframer(max_payload=16)
    big = Frame(MessageType.DATA, 0, 0, bytes(100)).encode()
    assert deframer.feed(big[:20] + good) == [Frame.of(MessageType.ACK, 1, 0, next_offset=9)]
    assert deframer.rejected >= 1


def test_bad_max_payload_is_a_deframe_error() -> None:
    with pytest.raises(DeframeError, match="max_payload"):
        Deframer(max_payload=-1)
