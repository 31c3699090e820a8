"""The maintenance-port wire format: one construct definition of the frame and of every message, used by both ends.

A frame (all integers little-endian; docs/maintenance-port.md is the reference and a test checks its table against
`FRAME_FIELDS`):

    0   sof          2   A5 5A, start of frame
    2   type         1   `MessageType`
    3   flags        1   `Flag` bits
    4   seq          2   sender's sequence number
    6   ack          2   sequence number of the frame this one answers
    8   length       2   payload length n
    10  header_crc   4   CRC-32 (zlib) of bytes 0..9
    14  payload      n   the message, laid out by `MESSAGES[type]`
    14+n frame_crc   4   CRC-32 (zlib) of bytes 0..13+n: header, header_crc and payload

The header has its own CRC so that a receiver never waits for a payload whose length came from noise. The frame CRC
covers everything before it (protocol 3), so the CRC that closes a frame is always the CRC of a run that starts at
that frame's own marker: no piece of another frame's bytes can stand in for it (docs/maintenance-port.md, "Why a
spliced frame cannot pass").
"""

from __future__ import annotations

import hashlib
import hmac
import io
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Any

from construct import (
    Bytes,
    Checksum,
    ConstructError,
    Container,
    GreedyBytes,
    Int8ul,
    Int16ul,
    Int32ul,
    PascalString,
    PrefixedArray,
    RawCopy,
    Rebuild,
    Struct,
    Terminated,
    len_,
    this,
)

from drivers.errors import FrameError

__all__ = [
    "BAUD_CONFIRM_S",
    "FRAME",
    "FRAME_FIELDS",
    "FRAME_OVERHEAD",
    "HEADER",
    "HEADER_SIZE",
    "HEAD_SIZE",
    "MAX_PAYLOAD",
    "MESSAGES",
    "NONCE_SIZE",
    "PROOF_DOMAIN",
    "PROTOCOL_VERSION",
    "SOF",
    "ActivationCode",
    "Compression",
    "Flag",
    "Frame",
    "FrameField",
    "HubState",
    "MessageType",
    "NakReason",
    "ProofRegion",
    "RefuseReason",
    "decode_message",
    "encode_message",
    "frame_crc_ok",
    "head_length",
    "message_fields",
    "parse_frame",
    "parse_frame_head",
    "proof_mac",
]

PROTOCOL_VERSION = 3
# After accepting a baud switch, a hub that hears no valid frame at the new rate within this time goes back.
BAUD_CONFIRM_S = 1.0
SOF = b"\xa5\x5a"
MAX_PAYLOAD = 0xFFFF


class MessageType(IntEnum):
    """The frame's `type` byte. Requests from the station are below 0x80, the hub's answers at 0x80 and above."""

    IDENTIFY = 0x01
    BEGIN_TRANSFER = 0x02
    DATA = 0x03
    VERIFY = 0x04
    ACTIVATE = 0x05
    READ_VERSION = 0x06
    BAUD_SWITCH = 0x07
    KEEPALIVE = 0x08
    ABORT = 0x09
    ERASE = 0x0A
    RESET = 0x0B
    PROVE = 0x0C
    IDENTITY = 0x81
    ACCEPT = 0x82
    REFUSE = 0x83
    ACK = 0x84
    NAK = 0x85
    VERIFY_RESULT = 0x86
    ACTIVATE_RESULT = 0x87
    VERSION = 0x88
    BAUD_RESULT = 0x89
    ALIVE = 0x8A
    DONE = 0x8B
    PROOF = 0x8C
    ERROR = 0xFF


class Flag(IntFlag):
    """The frame's `flags` byte."""

    NONE = 0
    RETRANSMISSION = 0x01  # this frame repeats an earlier one (diagnostics only; receivers never depend on it)


class Compression(IntEnum):
    """Begin-transfer's `compression`, and each DATA frame's `encoding`."""

    NONE = 0
    DEFLATE = 1  # raw DEFLATE (zlib, wbits -15) with the preceding 32 KiB of the image as preset dictionary


class RefuseReason(IntEnum):
    """Why a hub refuses begin-transfer."""

    REFUSED_BY_HUB = 1  # the hub's own rule refuses this image (kept as a code: vendors do not say why)
    TOO_LARGE = 2
    UNSUPPORTED_COMPRESSION = 3
    BUSY = 4
    BAD_REQUEST = 5


class NakReason(IntEnum):
    """Why a hub asks for data again from `next_offset`."""

    OUT_OF_ORDER = 1
    BAD_DATA = 2  # decompression failed or the length did not match
    NO_TRANSFER = 3  # DATA without an accepted begin-transfer
    BEYOND_END = 4


class ActivationCode(IntEnum):
    """GBCS use case CS06 Activate Firmware outcome codes."""

    SUCCESS = 0
    NO_IMAGE_HELD = 1
    HASH_MISMATCH = 2
    ACTIVATION_FAILURE = 3


class ProofRegion(IntEnum):
    """Which of the hub's images a PROVE asks about."""

    STAGED = 0  # the image being received or held for activation
    RUNNING = 1  # the whole Upgrade Image in the slot the hub boots from (empty before its first activation)


# Proof of possession (docs/maintenance-port.md, "Proof of possession"): a fresh random nonce per PROVE is the HMAC
# key, so only a hub that holds the bytes at the moment of asking can answer.
NONCE_SIZE = 16
PROOF_DOMAIN = b"reflash-proof/2"


def proof_mac(nonce: bytes, region: int, offset: int, length: int, data: bytes) -> bytes:
    """HMAC-SHA256(key=nonce, msg=PROOF_DOMAIN || region u8 || offset u32 le || length u32 le || data).

    `data` is the region's bytes[offset : offset + length]; both ends compute it with this one function.
    """
    if len(data) != length:
        raise ValueError(f"proof over {length} bytes given {len(data)}")
    mac = hmac.new(nonce, PROOF_DOMAIN + struct.pack("<BII", region, offset, length), hashlib.sha256)
    mac.update(data)
    return mac.digest()


class HubState(IntEnum):
    """What a hub reports it is doing, in ALIVE."""

    IDLE = 0
    RECEIVING = 1
    HOLDS_IMAGE = 2


_HEADER_SUBCONS: tuple[tuple[str, Any], ...] = (
    ("sof", Bytes(2)),
    ("type", Int8ul),
    ("flags", Int8ul),
    ("seq", Int16ul),
    ("ack", Int16ul),
    ("length", Rebuild(Int16ul, len_(this._.payload))),
)

HEADER = Struct(*(name / sub for name, sub in _HEADER_SUBCONS))
HEADER_SIZE = HEADER.sizeof()
# The same header read on its own, before the payload (and so the length's Rebuild source) exists.
_HEADER_ONLY = Struct(*(name / (Int16ul if name == "length" else sub) for name, sub in _HEADER_SUBCONS))
_FRAME_HEAD = Struct(
    "header" / RawCopy(_HEADER_ONLY),
    "header_crc" / Checksum(Int32ul, zlib.crc32, this.header.data),
).compile()

# The frame CRC covers the header, its CRC and the payload: the RawCopy `body` is every byte before it.
FRAME = Struct(
    "body"
    / RawCopy(
        Struct(
            "header" / RawCopy(HEADER),
            "header_crc" / Checksum(Int32ul, zlib.crc32, this.header.data),
            "payload" / Bytes(this.header.value.length),
        )
    ),
    "frame_crc" / Checksum(Int32ul, zlib.crc32, this.body.data),
)
HEAD_SIZE = HEADER_SIZE + 4
FRAME_OVERHEAD = HEAD_SIZE + 4
# Compiled for the receive path (it still checks both CRCs); frames are built with the interpreted FRAME.
_FRAME_PARSER = FRAME.compile()

# The deframer's fast checks, read off the construct layout above (tests check that they agree with FRAME): a flood
# of false starts must cost a CRC of 10 bytes each, not a construct parse and an exception.
_LENGTH_AT = sum(sub.sizeof() for name, sub in _HEADER_SUBCONS[: [n for n, _ in _HEADER_SUBCONS].index("length")])
_crc32 = zlib.crc32


def head_length(buf: bytes | bytearray, at: int) -> int | None:
    """The payload length a candidate header at `buf[at:]` declares, or None if its header CRC does not match.

    `buf` must hold at least HEAD_SIZE bytes from `at`. Same verdict as `parse_frame_head`, without construct.
    """
    if _crc32(buf[at : at + HEADER_SIZE]) != int.from_bytes(buf[at + HEADER_SIZE : at + HEAD_SIZE], "little"):
        return None
    return int.from_bytes(buf[at + _LENGTH_AT : at + _LENGTH_AT + 2], "little")


def frame_crc_ok(buf: bytes | bytearray, at: int, end: int) -> bool:
    """Whether the candidate frame `buf[at:end]` ends with the CRC-32 of every byte before its last four."""
    with memoryview(buf) as view:  # released at once: a bytearray with a live view cannot grow
        crc = _crc32(view[at : end - 4])
    return crc == int.from_bytes(buf[end - 4 : end], "little")


@dataclass(frozen=True)
class FrameField:
    """One row of the frame layout table: `offset` and `size` as the doc writes them (`n` = payload length)."""

    name: str
    offset: str
    size: str


def _frame_fields() -> tuple[FrameField, ...]:
    rows, offset = [], 0
    for name, sub in _HEADER_SUBCONS:
        size = sub.sizeof()
        rows.append(FrameField(name, str(offset), str(size)))
        offset += size
    rows.append(FrameField("header_crc", str(offset), "4"))
    offset += 4
    rows.append(FrameField("payload", str(offset), "n"))
    rows.append(FrameField("frame_crc", f"{offset}+n", "4"))
    return tuple(rows)


FRAME_FIELDS = _frame_fields()


class _ExactBytes(Bytes):  # type: ignore[misc]
    """`Bytes(n)` whose compiled parser refuses a short read, as the interpreted one does.

    Compiled construct reads fixed-size bytes with a bare `io.read(n)`, so a 31-byte hash would parse as a hash.
    """

    def _emitparse(self, code: Any) -> str:
        return f"stream_read(io, {self.length!r}, '(compiled)')"


def _text() -> Any:
    # The same for a length-prefixed string: the compiled form reads "up to" the prefix's count.
    text = PascalString(Int8ul, "utf8")
    text._emitparse = lambda code: f"stream_read(io, {Int8ul._compileparse(code)}, '(compiled)').decode('utf8')"
    return text


_EUI64 = _ExactBytes(8)
_TEXT = _text()
_SHA256 = _ExactBytes(32)

_MESSAGE_SUBCONS: dict[MessageType, tuple[tuple[str, Any], ...]] = {
    MessageType.IDENTIFY: (
        ("protocol_version", Int8ul),
        ("max_payload", Int16ul),
        ("window", Int8ul),
    ),
    MessageType.IDENTITY: (
        ("protocol_version", Int8ul),
        ("max_payload", Int16ul),
        ("window", Int8ul),
        ("manufacturer", Int16ul),
        ("model", Int16ul),
        ("hardware_version", Int16ul),
        ("firmware_version", Int32ul),
        ("staged", Int8ul),
        ("staged_version", Int32ul),
        ("chf_id", _EUI64),
        ("gpf_id", _EUI64),
        ("han_variant", _TEXT),
        ("chts_version", _TEXT),
        ("serial", _TEXT),
        ("baud_rates", PrefixedArray(Int8ul, Int32ul)),
    ),
    MessageType.BEGIN_TRANSFER: (
        ("total_size", Int32ul),
        ("sha256", _SHA256),
        ("image_sha256", _SHA256),
        ("compression", Int8ul),
    ),
    MessageType.ACCEPT: (("resume_offset", Int32ul),),
    MessageType.REFUSE: (("reason", Int8ul), ("detail", _TEXT)),
    MessageType.DATA: (
        ("offset", Int32ul),
        ("raw_length", Int32ul),
        ("encoding", Int8ul),
        ("data", GreedyBytes),
    ),
    MessageType.ACK: (("next_offset", Int32ul),),
    MessageType.NAK: (("next_offset", Int32ul), ("reason", Int8ul)),
    MessageType.VERIFY: (),
    MessageType.VERIFY_RESULT: (
        ("held", Int32ul),
        ("total_size", Int32ul),
        ("sha256", _SHA256),
        ("signature_ok", Int8ul),
    ),
    MessageType.ACTIVATE: (("sha256", _SHA256), ("image_sha256", _SHA256)),
    MessageType.ACTIVATE_RESULT: (("code", Int8ul), ("running_version", Int32ul)),
    MessageType.READ_VERSION: (),
    MessageType.VERSION: (("running_version", Int32ul), ("staged", Int8ul), ("staged_version", Int32ul)),
    MessageType.BAUD_SWITCH: (("baud", Int32ul),),
    MessageType.BAUD_RESULT: (("accepted", Int8ul), ("baud", Int32ul)),
    MessageType.KEEPALIVE: (),
    MessageType.ALIVE: (("state", Int8ul), ("held", Int32ul)),
    MessageType.ABORT: (),
    MessageType.ERASE: (),
    MessageType.RESET: (),
    MessageType.DONE: (),
    MessageType.PROVE: (
        ("nonce", _ExactBytes(NONCE_SIZE)),
        ("region", Int8ul),
        ("offset", Int32ul),
        ("length", Int32ul),
    ),
    MessageType.PROOF: (
        ("region", Int8ul),
        ("offset", Int32ul),
        ("length", Int32ul),
        ("held", Int32ul),
        ("mac", _SHA256),
    ),
    MessageType.ERROR: (("code", Int8ul), ("detail", _TEXT)),
}


# Compiled parsers raise the errors of the code they compile to, not only ConstructError.
_PARSE_ERRORS = (ConstructError, struct.error, ValueError, IndexError, UnicodeDecodeError)


def _struct(subcons: tuple[tuple[str, Any], ...]) -> Any:
    return Struct(*(name / sub for name, sub in subcons), Terminated)


# Compiled for parsing, the hot path on both ends; `_ExactBytes` and `_text` make the compiled parsers refuse short
# fields like the interpreted ones. Building uses the interpreted form because the compiled one does not check fixed
# lengths (a 31-byte hash would go out as a shorter message).
MESSAGES: dict[MessageType, Any] = {kind: _struct(subcons).compile() for kind, subcons in _MESSAGE_SUBCONS.items()}
_BUILDERS: dict[MessageType, Any] = {kind: _struct(subcons) for kind, subcons in _MESSAGE_SUBCONS.items()}
assert set(MESSAGES) == set(MessageType)


def message_fields(kind: MessageType) -> tuple[tuple[str, str], ...]:
    """(field, size) for each field of a message, size in bytes or a short note for variable ones (for the doc)."""
    out = []
    for name, sub in _MESSAGE_SUBCONS[kind]:
        if sub is _TEXT:
            size = "1+k"
        elif sub is GreedyBytes:
            size = "rest"
        else:
            try:
                size = str(sub.sizeof())
            except ConstructError:
                size = "1+4k"
        out.append((name, size))
    return tuple(out)


# Only called after a parse failed: walks the fields one by one to name the first that breaks, and where.
def _locate(kind: MessageType, payload: bytes) -> tuple[str, int, str]:
    stream = io.BytesIO(payload)
    for name, sub in _MESSAGE_SUBCONS[kind]:
        at = stream.tell()
        try:
            sub.parse_stream(stream)
        except _PARSE_ERRORS as exc:
            return name, at, str(exc).split("\n")[-1].strip() or type(exc).__name__
    at = stream.tell()
    return "end", at, f"{len(payload) - at} trailing bytes after the last field"


def decode_message(kind: MessageType, payload: bytes) -> Any:
    """Parse a payload as message `kind`. Raises FrameError naming the field and its offset in the frame."""
    try:
        return MESSAGES[kind].parse(payload)
    except _PARSE_ERRORS:
        field, at, problem = _locate(kind, payload)
        raise FrameError(kind.name, field, FRAME_OVERHEAD - 4 + at, problem) from None


def encode_message(kind: MessageType, **fields: Any) -> bytes:
    """Lay out message `kind`. Raises ValueError naming the message and the field that does not fit."""
    try:
        payload: bytes = _BUILDERS[kind].build(Container(fields))
    except (ConstructError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot build {kind.name}: {str(exc).strip()}") from None
    return payload


@dataclass(frozen=True)
class Frame:
    """One whole, CRC-checked frame."""

    type: MessageType
    seq: int
    ack: int
    payload: bytes
    flags: Flag = Flag.NONE

    def encode(self) -> bytes:
        if len(self.payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(self.payload)} bytes; a frame carries at most {MAX_PAYLOAD}")
        data: bytes = FRAME.build(
            {
                "body": {
                    "value": {
                        "header": {
                            "value": {
                                "sof": SOF,
                                "type": int(self.type),
                                "flags": int(self.flags),
                                "seq": self.seq & 0xFFFF,
                                "ack": self.ack & 0xFFFF,
                            }
                        },
                        "payload": self.payload,
                    }
                }
            }
        )
        return data

    def message(self) -> Any:
        return decode_message(self.type, self.payload)

    @classmethod
    def of(cls, kind: MessageType, seq: int, ack: int = 0, flags: Flag = Flag.NONE, **fields: Any) -> Frame:
        return cls(kind, seq & 0xFFFF, ack & 0xFFFF, encode_message(kind, **fields), flags)


def parse_frame_head(data: bytes) -> Any:
    """Parse and CRC-check the header of a candidate frame (its first HEADER_SIZE + 4 bytes).

    Returns the header fields; raises FrameError when the header CRC does not match. This is how a receiver learns
    a payload length it can trust before the payload has arrived.
    """
    try:
        return _FRAME_HEAD.parse(data[: HEADER_SIZE + 4]).header.value
    except _PARSE_ERRORS:
        raise FrameError("frame", "header_crc", HEADER_SIZE, "CRC-32 of the header does not match") from None


def parse_frame(data: bytes) -> Frame:
    """Parse exactly one whole frame. Raises FrameError naming the field and byte offset that is wrong."""
    data = bytes(data)
    if len(data) < FRAME_OVERHEAD:
        raise FrameError("frame", "header", 0, f"{len(data)} bytes; the smallest frame is {FRAME_OVERHEAD}")
    if data[:2] != SOF:
        raise FrameError("frame", "sof", 0, f"expected A5 5A, found {data[:2].hex(' ').upper()}")
    try:
        parsed = _FRAME_PARSER.parse(data)
    except _PARSE_ERRORS as exc:
        header = parse_frame_head(data)
        end = HEAD_SIZE + header.length
        if len(data) < end + 4:
            raise FrameError("frame", "payload", HEAD_SIZE, f"truncated: {exc}") from None
        raise FrameError("frame", "frame_crc", end, "CRC-32 of the frame does not match") from None
    body = parsed.body.value
    header = body.header.value
    if len(data) != FRAME_OVERHEAD + header.length:
        extra = len(data) - FRAME_OVERHEAD - header.length
        raise FrameError("frame", "end", FRAME_OVERHEAD + header.length, f"{extra} bytes after")
    try:
        kind = MessageType(header.type)
    except ValueError:
        raise FrameError("frame", "type", 2, f"unknown message type 0x{header.type:02X}") from None
    return Frame(kind, header.seq, header.ack, body.payload, Flag(header.flags))
