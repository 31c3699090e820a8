"""The GBCS Upgrade Image: a ZigBee OTA header, the Manufacturer Image, a control byte and an ECDSA signature.

Layout (all integers little-endian; docs/firmware-images.md is the reference and a test checks it against
`HEADER_FIELDS`):

    0   ZigBee OTA header, 60 bytes (hardware versions present)
    60  Manufacturer Image, n bytes
    60+n  control byte        61+n  signature length (0x40)        62+n  signature, raw r||s, 64 bytes

Parsing is strict: the first field that breaks the layout is refused with its name and byte offset, and nothing
but `ImageFormatError` ever escapes `parse_image`, whatever the bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from construct import Bytes, Int16ul, Int32ul, Struct
from cryptography.hazmat.primitives.asymmetric import ec

from firmware_catalog.errors import ImageFormatError
from firmware_catalog.hexcode import format_hex
from firmware_catalog.keys import SIGNATURE_SIZE, sign_raw, verify_raw
from firmware_catalog.signature_scope import DEFAULT_SCOPE, SignatureScope

__all__ = [
    "FIELD_CONTROL_HARDWARE_VERSIONS",
    "HEADER",
    "HEADER_FIELDS",
    "HEADER_LENGTH",
    "HEADER_STRING_SIZE",
    "HEADER_VERSION",
    "MAGIC",
    "TRAILER_SIZE",
    "UpgradeImage",
    "build_signed_image",
    "parse_image",
    "read_image",
]

MAGIC = 0x0BEEF11E
HEADER_VERSION = 0x0100
HEADER_LENGTH = 60
FIELD_CONTROL_HARDWARE_VERSIONS = 0x0004
HEADER_STRING_SIZE = 32
# control byte + signature length byte + signature
TRAILER_SIZE = 1 + 1 + SIGNATURE_SIZE

_HEADER_SUBCONS = (
    ("magic", Int32ul),
    ("header_version", Int16ul),
    ("header_length", Int16ul),
    ("field_control", Int16ul),
    ("manufacturer", Int16ul),
    ("image_type", Int16ul),
    ("file_version", Int32ul),
    ("stack_version", Int16ul),
    ("header_string", Bytes(HEADER_STRING_SIZE)),
    ("total_size", Int32ul),
    ("min_hardware_version", Int16ul),
    ("max_hardware_version", Int16ul),
)

HEADER = Struct(*(name / sub for name, sub in _HEADER_SUBCONS)).compile()


@dataclass(frozen=True)
class HeaderField:
    name: str
    offset: int
    size: int


def _field_table() -> tuple[HeaderField, ...]:
    fields, offset = [], 0
    for name, sub in _HEADER_SUBCONS:
        size = sub.sizeof()
        fields.append(HeaderField(name, offset, size))
        offset += size
    assert offset == HEADER_LENGTH
    return tuple(fields)


HEADER_FIELDS = _field_table()
_OFFSET = {f.name: f.offset for f in HEADER_FIELDS}


@dataclass(frozen=True)
class UpgradeImage:
    """A parsed, layout-checked Upgrade Image. `raw` is the file exactly as read; nothing is re-encoded."""

    raw: bytes
    manufacturer: int
    image_type: int
    file_version: int
    stack_version: int
    header_string_bytes: bytes
    total_size: int
    min_hardware_version: int
    max_hardware_version: int
    control: int
    signature: bytes

    @property
    def manufacturer_image_size(self) -> int:
        return self.total_size - HEADER_LENGTH - TRAILER_SIZE

    @property
    def manufacturer_image(self) -> bytes:
        return self.raw[HEADER_LENGTH : HEADER_LENGTH + self.manufacturer_image_size]

    @cached_property
    def manufacturer_image_sha256(self) -> str:
        """The GBCS Manufacturer Image Hash, lowercase hex: what a hub checks before it activates."""
        return hashlib.sha256(self.manufacturer_image).hexdigest()

    @cached_property
    def upgrade_image_sha256(self) -> str:
        """SHA-256 of the whole Upgrade Image file (header, Manufacturer Image, control byte, signature), lowercase
        hex: the envelope the catalog pins and the hub must hold byte for byte. The MI hash alone does not cover the
        header string, the control byte or the signature."""
        return hashlib.sha256(self.raw).hexdigest()

    def signed_bytes(self, scope: SignatureScope) -> bytes:
        """The bytes a signature of this scope covers (firmware_catalog/signature_scope.py)."""
        return _covered(self.raw[: self.total_size - 1 - SIGNATURE_SIZE], scope)

    @property
    def header_string(self) -> str:
        # The OTA header string is a NUL-padded character field; show what is there without failing on odd bytes.
        return self.header_string_bytes.rstrip(b"\0").decode("ascii", errors="replace")

    def verify(self, key: ec.EllipticCurvePublicKey, scope: SignatureScope) -> bool:
        """Whether `key` signed this image's bytes of `scope`; the scope is the key's, as the catalog states it."""
        return verify_raw(key, self.signed_bytes(scope), self.signature)

    def scopes_signed_by(self, key: ec.EllipticCurvePublicKey) -> tuple[SignatureScope, ...]:
        """Every scope over which `key`'s signature verifies. For telling a person what is wrong only: a decision
        checks the one scope the catalog states for the key, never whichever happens to verify."""
        return tuple(scope for scope in SignatureScope if self.verify(key, scope))

    def describe(self) -> dict[str, Any]:
        """The JSON view `reflash catalog inspect --json` prints; its keys are a published contract."""
        return {
            "manufacturer": format_hex(self.manufacturer, 4),
            "image_type": format_hex(self.image_type, 4),
            "file_version": format_hex(self.file_version, 8),
            "stack_version": format_hex(self.stack_version, 4),
            "min_hardware_version": format_hex(self.min_hardware_version, 4),
            "max_hardware_version": format_hex(self.max_hardware_version, 4),
            "header_string": self.header_string,
            "total_size": self.total_size,
            "manufacturer_image_size": self.manufacturer_image_size,
            "manufacturer_image_sha256": self.manufacturer_image_sha256,
            "upgrade_image_sha256": self.upgrade_image_sha256,
            "control": self.control,
            "signature": self.signature.hex(),
        }


def _covered(before_signature_length: bytes, scope: SignatureScope) -> bytes:
    """The bytes of `scope` out of everything before the signature-length byte (header, image, control byte)."""
    if scope is SignatureScope.MANUFACTURER_IMAGE:
        return before_signature_length[HEADER_LENGTH:-1]
    return before_signature_length


def _truncated(data: bytes, field: str, offset: int, size: int) -> ImageFormatError:
    return ImageFormatError(
        field,
        offset,
        f"truncated: the file ends at byte {len(data)}, the field needs bytes {offset}..{offset + size - 1}",
    )


def _check_header_field(name: str, value: Any) -> str | None:
    """The rule each fixed header field must meet; returns what is wrong, or None."""
    if name == "magic" and value != MAGIC:
        return f"expected 0x{MAGIC:08X} (bytes 1E F1 EE 0B), found 0x{value:08X}"
    if name == "header_version" and value != HEADER_VERSION:
        return f"expected 0x{HEADER_VERSION:04X}, found 0x{value:04X}"
    if name == "header_length" and value != HEADER_LENGTH:
        return f"expected {HEADER_LENGTH} (an OTA header with hardware versions), found {value}"
    if name == "field_control" and value != FIELD_CONTROL_HARDWARE_VERSIONS:
        return (
            f"expected 0x{FIELD_CONTROL_HARDWARE_VERSIONS:04X} (hardware versions present, no other optional "
            f"fields), found 0x{value:04X}"
        )
    return None


def parse_image(data: bytes, source: str | Path | None = None) -> UpgradeImage:
    """Parse and layout-check an Upgrade Image. Raises ImageFormatError naming the field and byte offset."""
    try:
        return _parse(bytes(data))
    except ImageFormatError as exc:
        raise (exc.with_source(source) if source is not None else exc) from None


def _parse(data: bytes) -> UpgradeImage:
    if len(data) < HEADER_LENGTH:
        # Find the first field that is wrong or cut short, so a short file reports the right place.
        for f in HEADER_FIELDS:
            if f.offset + f.size > len(data):
                raise _truncated(data, f.name, f.offset, f.size)
            sub = dict(_HEADER_SUBCONS)[f.name]
            problem = _check_header_field(f.name, sub.parse(data[f.offset : f.offset + f.size]))
            if problem:
                raise ImageFormatError(f.name, f.offset, problem)
    header = HEADER.parse(data[:HEADER_LENGTH])
    for f in HEADER_FIELDS:
        problem = _check_header_field(f.name, header[f.name])
        if problem:
            raise ImageFormatError(f.name, f.offset, problem)

    total = header.total_size
    smallest = HEADER_LENGTH + 1 + TRAILER_SIZE
    if total < smallest:
        raise ImageFormatError(
            "total_size",
            _OFFSET["total_size"],
            f"{total} is too small: header ({HEADER_LENGTH}) + a Manufacturer Image of at least 1 byte + "
            f"control, signature length and signature ({TRAILER_SIZE}) need {smallest}",
        )
    if total != len(data):
        raise ImageFormatError(
            "total_size",
            _OFFSET["total_size"],
            f"header says the image is {total} bytes but the file has {len(data)}"
            + (" (truncated)" if len(data) < total else " (trailing bytes)"),
        )
    if header.min_hardware_version > header.max_hardware_version:
        raise ImageFormatError(
            "min_hardware_version",
            _OFFSET["min_hardware_version"],
            f"minimum hardware version {header.min_hardware_version:04X} is above the maximum "
            f"{header.max_hardware_version:04X}",
        )

    control_at = total - TRAILER_SIZE
    siglen_at = control_at + 1
    if data[siglen_at] != SIGNATURE_SIZE:
        raise ImageFormatError(
            "signature_length", siglen_at, f"expected 0x{SIGNATURE_SIZE:02X}, found 0x{data[siglen_at]:02X}"
        )
    return UpgradeImage(
        raw=data,
        manufacturer=header.manufacturer,
        image_type=header.image_type,
        file_version=header.file_version,
        stack_version=header.stack_version,
        header_string_bytes=header.header_string,
        total_size=total,
        min_hardware_version=header.min_hardware_version,
        max_hardware_version=header.max_hardware_version,
        control=data[control_at],
        signature=data[siglen_at + 1 :],
    )


def read_image(path: str | Path) -> UpgradeImage:
    """Read and parse an image file; errors name the file as well as the field and offset."""
    return parse_image(Path(path).read_bytes(), source=path)


def build_signed_image(
    key: ec.EllipticCurvePrivateKey,
    *,
    manufacturer: int,
    image_type: int,
    file_version: int,
    min_hardware_version: int,
    max_hardware_version: int,
    manufacturer_image: bytes,
    header_string: str = "",
    control: int = 0,
    stack_version: int = 0x0002,
    scope: SignatureScope = DEFAULT_SCOPE,
) -> bytes:
    """Lay out and sign an Upgrade Image, the signature covering `scope`. Arguments are checked here so a bad call
    never writes a bad file."""
    if not manufacturer_image:
        raise ValueError("the Manufacturer Image is empty")
    if min_hardware_version > max_hardware_version:
        raise ValueError(
            f"minimum hardware version {min_hardware_version:04X} is above the maximum {max_hardware_version:04X}"
        )
    if not 0 <= control <= 0xFF:
        raise ValueError(f"control must be a byte (0..255), got {control}")
    encoded = header_string.encode("ascii")
    if len(encoded) > HEADER_STRING_SIZE:
        raise ValueError(f"header string is {len(encoded)} bytes; at most {HEADER_STRING_SIZE} fit")
    header: bytes = HEADER.build(
        {
            "magic": MAGIC,
            "header_version": HEADER_VERSION,
            "header_length": HEADER_LENGTH,
            "field_control": FIELD_CONTROL_HARDWARE_VERSIONS,
            "manufacturer": manufacturer,
            "image_type": image_type,
            "file_version": file_version,
            "stack_version": stack_version,
            "header_string": encoded.ljust(HEADER_STRING_SIZE, b"\0"),
            "total_size": HEADER_LENGTH + len(manufacturer_image) + TRAILER_SIZE,
            "min_hardware_version": min_hardware_version,
            "max_hardware_version": max_hardware_version,
        }
    )
    unsigned = header + manufacturer_image + bytes([control])
    return unsigned + bytes([SIGNATURE_SIZE]) + sign_raw(key, _covered(unsigned, scope))
