"""Fixed-width hexadecimal codes, the way SMI and DUIS write them: manufacturer `121D`, version `ACDCACDC`."""

from __future__ import annotations

import re

__all__ = ["format_hex", "parse_hex"]

_HEX = re.compile(r"[0-9A-Fa-f]+")


def parse_hex(text: str, digits: int, field: str) -> int:
    """Read exactly `digits` hex digits; raise ValueError naming `field` otherwise."""
    if not isinstance(text, str) or len(text) != digits or not _HEX.fullmatch(text):
        raise ValueError(f"{field} must be {digits} hex digits, got {text!r}")
    return int(text, 16)


def format_hex(value: int, digits: int) -> str:
    """Uppercase, zero-padded, as DUIS prints device codes."""
    return f"{value:0{digits}X}"
