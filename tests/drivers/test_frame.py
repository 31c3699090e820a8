"""The wire format: build/parse round trips, and strict errors that name the field and byte offset."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import FrameError
from drivers.frame import (
    FRAME_OVERHEAD,
    MAX_PAYLOAD,
    Flag,
    Frame,
    MessageType,
    ProofRegion,
    decode_message,
    encode_message,
    frame_crc_ok,
    head_length,
    message_fields,
    parse_frame,
    parse_frame_head,
    proof_mac,
)

frames = st.builds(
    Frame,
    type=st.sampled_from(list(MessageType)),
    seq=st.integers(0, 0xFFFF),
    ack=st.integers(0, 0xFFFF),
    payload=st.binary(max_size=2048),
    flags=st.sampled_from(list(Flag)),
)


@given(frames)
def test_frame_round_trip(frame: Frame) -> None:
    data = frame.encode()
    assert len(data) == FRAME_OVERHEAD + len(frame.payload)
    assert parse_frame(data) == frame


@given(
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.sampled_from([0, 1]),
    st.binary(max_size=512),
)
def test_data_message_round_trip(offset: int, raw_length: int, encoding: int, data: bytes) -> None:
    fields = {"offset": offset, "raw_length": raw_length, "encoding": encoding, "data": data}
    decoded = decode_message(MessageType.DATA, encode_message(MessageType.DATA, **fields))
    assert {k: decoded[k] for k in fields} == fields


@given(
    st.text(max_size=40),
    st.text(max_size=40),
    st.lists(st.integers(1, 0xFFFFFFFF), max_size=8),
    st.binary(min_size=8, max_size=8),
)
def test_identity_round_trip(han: str, serial: str, bauds: list[int], chf: bytes) -> None:
    fields = {
        "protocol_version": 1,
        "max_payload": 4096,
        "window": 16,
        "manufacturer": 0x1072,
        "model": 0x0102,
        "hardware_version": 0x0110,
        "firmware_version": 0x04000007,
        "staged": 0,
        "staged_version": 0,
        "chf_id": chf,
        "gpf_id": bytes(8),
        "han_variant": han[:20],
        "chts_version": "V1.3",
        "serial": serial[:20],
        "baud_rates": bauds,
    }
    decoded = decode_message(MessageType.IDENTITY, encode_message(MessageType.IDENTITY, **fields))
    assert {k: decoded[k] for k in fields} == fields


@given(st.sampled_from(list(MessageType)), st.binary(max_size=300))
def test_decode_message_raises_only_frame_error(kind: MessageType, payload: bytes) -> None:
    offset = None
    try:
        decode_message(kind, payload)
    except FrameError as exc:
        offset = exc.offset
    assert offset is None or offset >= FRAME_OVERHEAD - 4


def test_truncated_message_names_field_and_offset() -> None:
    payload = encode_message(
        MessageType.BEGIN_TRANSFER, total_size=1000, sha256=bytes(32), image_sha256=bytes(32), compression=1
    )[:10]
    with pytest.raises(FrameError) as caught:
        decode_message(MessageType.BEGIN_TRANSFER, payload)
    assert caught.value.field == "sha256"
    assert caught.value.offset == 14 + 4
    assert "BEGIN_TRANSFER: sha256 at byte 18" in str(caught.value)


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(FrameError, match="1 trailing bytes"):
        decode_message(MessageType.ACK, encode_message(MessageType.ACK, next_offset=5) + b"x")


def test_frame_errors_name_the_field() -> None:
    good = Frame.of(MessageType.ACK, 1, 2, next_offset=3).encode()
    cases = {
        "sof": b"\x00" + good[1:],
        "header_crc": good[:10] + bytes([good[10] ^ 1]) + good[11:],
        "frame_crc": good[:-1] + bytes([good[-1] ^ 1]),
        "end": good + b"\x00",
    }
    for field, data in cases.items():
        with pytest.raises(FrameError) as caught:
            parse_frame(data)
        assert caught.value.field == field


def test_unknown_type_is_refused_with_its_offset() -> None:
    from drivers.frame import FRAME

    header = {"value": {"sof": b"\xa5\x5a", "type": 0x70, "flags": 0, "seq": 0, "ack": 0}}
    data = FRAME.build({"body": {"value": {"header": header, "payload": b""}}})
    with pytest.raises(FrameError, match="type at byte 2: unknown message type 0x70"):
        parse_frame(data)


def test_payload_larger_than_a_frame_holds_is_refused() -> None:
    with pytest.raises(ValueError, match="at most"):
        Frame(MessageType.DATA, 0, 0, bytes(MAX_PAYLOAD + 1)).encode()


def test_proof_mac_is_the_documented_hmac() -> None:
    nonce, data = bytes(range(16)), b"image bytes" * 10
    message = b"reflash-proof/2" + b"\x01" + (7).to_bytes(4, "little") + len(data).to_bytes(4, "little") + data
    expected = hmac.new(nonce, message, hashlib.sha256).digest()
    assert proof_mac(nonce, ProofRegion.RUNNING, 7, len(data), data) == expected
    assert proof_mac(bytes(16), ProofRegion.RUNNING, 7, len(data), data) != expected  # the nonce is the key
    assert proof_mac(nonce, ProofRegion.STAGED, 7, len(data), data) != expected  # the region is covered
    with pytest.raises(ValueError, match="proof over 5 bytes given 4"):
        proof_mac(nonce, 0, 0, 5, b"1234")


def test_prove_and_proof_round_trip() -> None:
    prove = {"nonce": bytes(range(16)), "region": 1, "offset": 3, "length": 1 << 20}
    payload = encode_message(MessageType.PROVE, **prove)
    assert len(payload) == 25
    assert {k: decode_message(MessageType.PROVE, payload)[k] for k in prove} == prove
    proof = {"region": 1, "offset": 3, "length": 1 << 20, "held": 99, "mac": bytes(32)}
    payload = encode_message(MessageType.PROOF, **proof)
    assert len(payload) == 45
    assert {k: decode_message(MessageType.PROOF, payload)[k] for k in proof} == proof
    with pytest.raises(ValueError, match="cannot build PROVE"):
        encode_message(MessageType.PROVE, **(prove | {"nonce": bytes(15)}))


# Every message refuses a payload shorter or longer than its layout, naming the field and its byte offset.

_SAMPLE_TEXT = "abc"
_SAMPLE_ARRAY = [9600, 115200]


def _sample(kind: MessageType) -> tuple[bytes, list[tuple[str, int]]]:
    """A valid payload of `kind` and the (field, size) of each of its fields in that payload."""
    values: dict[str, object] = {}
    spans = []
    for name, size in message_fields(kind):
        if size == "1+k":
            values[name], width = _SAMPLE_TEXT, 1 + len(_SAMPLE_TEXT)
        elif size == "1+4k":
            values[name], width = _SAMPLE_ARRAY, 1 + 4 * len(_SAMPLE_ARRAY)
        elif size == "rest":
            values[name], width = b"xyz", 3
        else:
            width = int(size)
            values[name] = bytes(width) if width > 4 else 1
        spans.append((name, width))
    payload = encode_message(kind, **values)
    assert len(payload) == sum(width for _, width in spans)
    return payload, spans


def _field_at(spans: list[tuple[str, int]], length: int) -> str:
    # A payload cut to `length` bytes breaks the field that runs past its end.
    offset = 0
    for name, width in spans:
        if offset + width > length:
            return name
        offset += width
    raise AssertionError("not cut")


@given(st.sampled_from(list(MessageType)), st.integers(1, 40), st.binary(min_size=40, max_size=40))
def test_a_shortened_or_lengthened_payload_is_refused_naming_the_field(kind: MessageType, k: int, extra: bytes) -> None:
    payload, spans = _sample(kind)
    greedy = spans and spans[-1][0] == "data"  # DATA's chunk is "the rest of the payload": any length fits
    fixed = len(payload) - (spans[-1][1] if greedy else 0)
    if k <= fixed:
        short = payload[: fixed - k] if greedy else payload[: len(payload) - k]
        with pytest.raises(FrameError) as caught:
            decode_message(kind, short)
        assert caught.value.field == _field_at(spans, len(short)), short.hex()
        assert caught.value.offset == FRAME_OVERHEAD - 4 + sum(
            w for _, w in spans[: [n for n, _ in spans].index(caught.value.field)]
        )
    if not greedy:
        with pytest.raises(FrameError) as caught:
            decode_message(kind, payload + extra[:k])
        assert (caught.value.field, caught.value.offset) == ("end", FRAME_OVERHEAD - 4 + len(payload))


def test_a_short_hash_is_refused_by_the_compiled_parser_itself() -> None:
    from drivers.frame import MESSAGES

    payload = encode_message(MessageType.ACTIVATE, sha256=bytes(32), image_sha256=bytes(32))
    with pytest.raises(Exception, match="expected 32, found 31"):
        MESSAGES[MessageType.ACTIVATE].parse(payload[:-1])
    with pytest.raises(FrameError, match="ACTIVATE: image_sha256 at byte 46"):
        decode_message(MessageType.ACTIVATE, payload[:-1])


# The deframer's fast checks agree with the construct definition.


@given(frames, st.integers(0, 2**32), st.booleans())
def test_fast_checks_agree_with_the_construct_definition(frame: Frame, seed: int, flip: bool) -> None:
    data = bytearray(frame.encode())
    if flip:
        bit = seed % (len(data) * 8)
        data[bit // 8] ^= 1 << (bit % 8)
    try:
        expected_length: int | None = parse_frame_head(bytes(data)).length
    except FrameError:
        expected_length = None
    assert head_length(data, 0) == expected_length
    if expected_length is not None and expected_length == len(frame.payload):
        try:
            parse_frame(bytes(data))
            whole = True
        except FrameError as exc:
            whole = exc.field not in ("frame_crc", "sof")
        assert frame_crc_ok(data, 0, len(data)) == whole
