"""Upgrade Image layout: strict parsing with field and offset, round trips, signatures, and fuzzed bytes."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_catalog.errors import ImageFormatError
from firmware_catalog.image import HEADER_FIELDS, HEADER_LENGTH, build_signed_image, parse_image
from firmware_catalog.keys import generate_key
from firmware_catalog.signature_scope import DEFAULT_SCOPE

KEY = generate_key()
BODY = bytes(range(256)) * 3


def make(**overrides: int) -> bytes:
    args: dict[str, Any] = {
        "manufacturer": 0x121D,
        "image_type": 0x0000,
        "file_version": 0xACDCACDC,
        "min_hardware_version": 0x1111,
        "max_hardware_version": 0x1211,
    } | overrides
    return build_signed_image(KEY, manufacturer_image=BODY, header_string="test image", **args)


def patch(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def test_round_trip_keeps_every_field_and_verifies() -> None:
    data = make()
    image = parse_image(data)
    assert image.raw == data
    assert (image.manufacturer, image.image_type, image.file_version) == (0x121D, 0, 0xACDCACDC)
    assert (image.min_hardware_version, image.max_hardware_version) == (0x1111, 0x1211)
    assert image.manufacturer_image == BODY
    assert image.header_string == "test image"
    assert image.total_size == len(data) == HEADER_LENGTH + len(BODY) + 66
    assert image.verify(KEY.public_key(), DEFAULT_SCOPE)
    assert not image.verify(generate_key().public_key(), DEFAULT_SCOPE)


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "field"),
    [
        (0, "<I", 0x0BEEF11F, "magic"),
        (4, "<H", 0x0200, "header_version"),
        (6, "<H", 56, "header_length"),
        (8, "<H", 0x0000, "field_control"),
        (8, "<H", 0x0005, "field_control"),
        (52, "<I", 9999, "total_size"),
        (52, "<I", 100, "total_size"),
        (56, "<H", 0x1300, "min_hardware_version"),
    ],
)
def test_each_broken_header_field_is_named_with_its_offset(offset: int, fmt: str, value: int, field: str) -> None:
    with pytest.raises(ImageFormatError) as caught:
        parse_image(patch(make(), offset, fmt, value), source="img.bin")
    assert caught.value.field == field
    assert caught.value.offset == offset
    assert f"img.bin: {field} at byte {offset}" in str(caught.value)


def test_signature_length_other_than_0x40_is_refused_at_its_offset() -> None:
    data = bytearray(make())
    at = len(data) - 65
    data[at] = 0x48
    with pytest.raises(ImageFormatError) as caught:
        parse_image(bytes(data))
    assert (caught.value.field, caught.value.offset) == ("signature_length", at)


@pytest.mark.parametrize("length", [0, 1, 3, 4, 10, 20, 51, 52, 59])
def test_truncated_header_names_the_cut_field(length: int) -> None:
    with pytest.raises(ImageFormatError) as caught:
        parse_image(make()[:length])
    expected = next(f for f in HEADER_FIELDS if f.offset + f.size > length)
    assert caught.value.field == expected.name
    assert caught.value.offset == expected.offset
    assert "truncated" in str(caught.value)


def test_truncated_body_or_signature_is_a_size_mismatch() -> None:
    data = make()
    for cut in (HEADER_LENGTH, HEADER_LENGTH + 10, len(data) - 1):
        with pytest.raises(ImageFormatError) as caught:
            parse_image(data[:cut])
        assert caught.value.field == "total_size"
        assert "truncated" in str(caught.value)


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(ImageFormatError, match="trailing bytes"):
        parse_image(make() + b"\0")


def test_every_signed_byte_matters() -> None:
    data = make()
    image = parse_image(data)
    signed = len(image.signed_bytes(DEFAULT_SCOPE))
    for index in (0, 14, 30, HEADER_LENGTH, signed - 2, signed - 1):
        tampered = bytearray(data)
        tampered[index] ^= 0x01
        try:
            changed = parse_image(bytes(tampered))
        except ImageFormatError:
            continue
        assert not changed.verify(KEY.public_key(), DEFAULT_SCOPE), f"flipping byte {index} kept the signature valid"


def test_signature_bytes_matter() -> None:
    tampered = bytearray(make())
    tampered[-1] ^= 0x80
    assert not parse_image(bytes(tampered)).verify(KEY.public_key(), DEFAULT_SCOPE)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_hardware_version": 0x2000, "max_hardware_version": 0x1000},
        {"header_string": "x" * 33},
        {"control": 256},
        {"manufacturer_image": b""},
    ],
)
def test_build_refuses_bad_arguments(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "manufacturer": 1,
        "image_type": 2,
        "file_version": 3,
        "min_hardware_version": 1,
        "max_hardware_version": 2,
        "manufacturer_image": b"x",
    } | kwargs
    with pytest.raises(ValueError, match=r"."):
        build_signed_image(KEY, **args)  # type: ignore[arg-type]


@settings(max_examples=400)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_image_format_error(data: bytes) -> None:
    with contextlib.suppress(ImageFormatError):
        parse_image(data)


@settings(max_examples=300)
@given(st.data())
def test_mutated_images_raise_only_image_format_error(data: st.DataObject) -> None:
    original = bytearray(make())
    for _ in range(data.draw(st.integers(1, 8))):
        index = data.draw(st.integers(0, len(original) - 1))
        original[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(original)))
    try:
        parse_image(bytes(original[:cut]))
    except ImageFormatError as exc:
        assert 0 <= exc.offset < len(original)  # noqa: PT017 -- hypothesis: the error is optional here
