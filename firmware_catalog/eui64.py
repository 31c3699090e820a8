"""EUI-64 device IDs as DUIS writes them, `00-DB-12-34-56-78-90-A0`: reading them in any common form, writing them
in that one. A module of its own so that commands reading IDs (a barcode scanner's input) need nothing heavier."""

from __future__ import annotations

import re

__all__ = ["format_eui64", "normalise_eui64"]

_EUI64 = re.compile(r"[0-9A-F]{2}(-[0-9A-F]{2}){7}")


def normalise_eui64(text: str) -> str:
    """DUIS writes device IDs as `00-DB-12-34-56-78-90-A0`; accept lowercase or bare hex, return that form."""
    compact = text.replace("-", "").replace(":", "").strip().upper()
    if len(compact) != 16 or not re.fullmatch(r"[0-9A-F]{16}", compact):
        raise ValueError(f"not an EUI-64 device ID (8 octets like 00-DB-12-34-56-78-90-A0): {text!r}")
    out = "-".join(compact[i : i + 2] for i in range(0, 16, 2))
    assert _EUI64.fullmatch(out)
    return out


def format_eui64(value: int) -> str:
    """A device ID from its 64-bit number, in the DUIS form `00-DB-12-34-56-78-90-A0`."""
    if not 0 <= value < 1 << 64:
        raise ValueError(f"an EUI-64 is 64 bits, got {value:#x}")
    return normalise_eui64(f"{value:016X}")
