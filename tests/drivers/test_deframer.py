"""The deframer against noise: random bytes, random splits, garbage before good frames."""

from __future__ import annotations

import contextlib
import random
import zlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from drivers.deframer import FEED_SLICE, Deframer
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


# Linear cost: the deframer's own work counters, not wall time.


def _work(deframer: Deframer) -> int:
    return (
        deframer.candidates
        + deframer.header_checks
        + deframer.payload_checks
        + deframer.crc_bytes
        + deframer.copied
        + deframer.discarded
    )


def _cost(unit: bytes, size: int, read: int, max_payload: int) -> int:
    data = (unit * (size // len(unit) + 1))[:size]
    deframer = Deframer(max_payload)
    for at in range(0, size, read):
        deframer.feed(data[at : at + read])
    return _work(deframer)


def _header(length: int, seq: int = 1) -> bytes:
    # The first 14 bytes of a frame declaring `length` payload bytes: a header whose CRC passes.
    return Frame(MessageType.DATA, seq, 0, bytes(length)).encode()[:14]


# Adversarial units, tiled to the input size: the A5 5A flood, headers that pass their CRC and declare the largest
# payload allowed (each costs a frame CRC over that payload once its bytes are there), the same packed behind
# markers, and random bytes.
_MAX = 1024
adversarial_units = st.one_of(
    st.just(SOF),
    st.just(_header(_MAX)),
    st.builds(lambda n, seq: SOF * n + _header(_MAX, seq), st.integers(1, 8), st.integers(0, 0xFFFF)),
    st.lists(st.one_of(st.just(SOF), st.just(_header(_MAX)), st.binary(min_size=1, max_size=8)), min_size=1).map(
        b"".join
    ),
    st.binary(min_size=1, max_size=64),
)


@settings(max_examples=40, deadline=None)
@given(adversarial_units, st.sampled_from([1, 7, 512, 4096, 65536]))
def test_deframing_costs_linear_work_whatever_the_input(unit: bytes, read: int) -> None:
    small = 8 * 1024
    costs = {size: _cost(unit, size, read, _MAX) for size in (small, 4 * small, 16 * small)}
    # The work each further input byte costs does not grow with the input: from 8 KiB to 32 KiB and from 32 KiB to
    # 128 KiB it is the same (differences, so that the frames still pending at the end do not count).
    early = (costs[4 * small] - costs[small]) / (3 * small)
    late = (costs[16 * small] - costs[4 * small]) / (12 * small)
    assert late <= early * 1.1 + 1, costs
    # And it is bounded by the design: a marker examined at most twice (once more when its frame completes), one
    # header CRC and at most one frame CRC over at most max_payload + 14 bytes each.
    biggest = 16 * small
    assert costs[biggest] <= biggest * (8 + (_MAX + 14) / 6)


def test_an_sof_flood_costs_a_few_steps_per_byte() -> None:
    deframer = Deframer()
    for _ in range(64):
        deframer.feed(SOF * 2048)
    assert deframer.candidates <= 64 * 2048
    assert deframer.header_checks == deframer.payload_checks == deframer.crc_bytes == 0
    assert deframer.pending <= 14
    assert deframer.copied <= 14 * 4  # the buffer moved only when compacted, once per 64 KiB consumed


def test_slices_are_bounded_and_lose_nothing() -> None:
    frames = [Frame.of(MessageType.ACK, n, 0, next_offset=n) for n in range(2000)]
    data = b"".join(f.encode() for f in frames)
    deframer = Deframer()
    pieces = list(deframer.slices(data))
    assert len(pieces) == -(-len(data) // FEED_SLICE)
    assert [f for piece in pieces for f in piece] == frames


# Never a frame that was not sent: cuts and splices of valid frames.

_PHANTOM_CUT = Frame(MessageType.DATA, 5, 0, bytes(10)).encode()[:14]  # a header declaring 10 bytes, then the cut
_NEXT = Frame.of(MessageType.ACK, 6, 0, next_offset=4096)

cut_frames = st.builds(
    Frame,
    type=st.sampled_from(list(MessageType)),
    seq=st.integers(0, 0xFFFF),
    ack=st.integers(0, 0xFFFF),
    payload=st.binary(max_size=64),
)


@settings(max_examples=400)
@given(
    cut_frames,
    st.integers(0, 200),
    st.lists(st.tuples(st.binary(max_size=24), cut_frames), min_size=1, max_size=6),
    st.lists(st.integers(0, 100_000), max_size=10),
)
@example(Frame(MessageType.DATA, 5, 0, bytes(10)), 14, [(b"", _NEXT)], [])
@example(Frame(MessageType.DATA, 5, 0, bytes(10)), 14, [(b"", _NEXT), (b"", _NEXT)], [14, 20])
# The cut-off CRC byte is 0xA5, the marker's first byte: the next frame's marker completes the cut frame.
@example(
    Frame(MessageType.IDENTIFY, 0, 0, bytes.fromhex("d0eccc3fe483901ef0caa8")),
    28,
    [(b"", Frame(MessageType.IDENTIFY, 0, 0, b""))],
    [],
)
def test_a_cut_frame_followed_by_frames_never_yields_a_frame_not_sent(
    damaged: Frame, cut: int, after: list[tuple[bytes, Frame]], cuts: list[int]
) -> None:
    head = damaged.encode()
    head = head[: min(cut, len(head) - 1)]  # any proper prefix: the frame never arrived whole
    stream = head
    placed: list[tuple[int, Frame]] = []  # each frame sent, at the offset where it starts in the stream
    for noise, frame in after:
        stream += noise.replace(SOF[:1], b"\x00")  # noise without markers: only frames and the cut can start one
        placed.append((len(stream), frame))
        stream += frame.encode()
    # Whatever a false candidate declared must complete and fail before what follows can be delivered: the link
    # carries on (retransmissions, keepalives), here as idle bytes with no marker.
    stream += bytes(64 + 18)
    sent = [frame for _, frame in placed]
    whole = damaged.encode()
    if head and stream.startswith(whole):
        # What followed the cut happened to be the bytes cut off: the frame did arrive, and the frames whose first
        # bytes completed it are lost with them (no deframer delivers overlapping frames).
        sent = [damaged, *(frame for at, frame in placed if at >= len(whole))]
    assert _feed(Deframer(), _split(stream, cuts)) == sent


def test_the_protocol_2_phantom_cannot_pass() -> None:
    # docs/maintenance-port.md "Why a spliced frame cannot pass": a header and its own CRC have the CRC-32 residue.
    assert zlib.crc32(_PHANTOM_CUT) == 0x2144DF1C
    assert Deframer().feed(_PHANTOM_CUT + _NEXT.encode() + bytes(32)) == [_NEXT]


@settings(max_examples=200)
@given(st.lists(cut_frames, min_size=2, max_size=5), st.data())
def test_noise_inside_frames_never_yields_a_frame_not_sent(frames: list[Frame], data: st.DataObject) -> None:
    stream = bytearray(b"".join(f.encode() for f in frames))
    # Splice: take out or put in a run of bytes somewhere, then cut the stream anywhere and resume on a whole frame.
    at = data.draw(st.integers(0, len(stream)))
    span = data.draw(st.integers(0, 30))
    inserted = data.draw(st.binary(max_size=30))
    stream[at : at + span] = inserted
    tail = Frame.of(MessageType.KEEPALIVE, 1)
    out = Deframer().feed(bytes(stream) + bytes(64 + 18) + tail.encode())
    sent = {f.encode() for f in frames} | {tail.encode()}
    assert all(f.encode() in sent for f in out)
    assert out[-1] == tail
