"""What a hub says about itself on the maintenance port: the facts the policy and every report use."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from firmware_catalog.hexcode import parse_hex

__all__ = ["Eui64", "Hex4", "Hex8", "HubIdentity", "format_eui64", "normalise_eui64"]

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


def _hex(digits: int) -> AfterValidator:
    def check(value: str) -> str:
        parse_hex(value, digits, "value")
        return value.upper()

    return AfterValidator(check)


Hex4 = Annotated[str, _hex(4)]
Hex8 = Annotated[str, _hex(8)]
Eui64 = Annotated[str, AfterValidator(normalise_eui64)]


class HubIdentity(BaseModel):
    """A hub's identity as read from its maintenance port; the policy needs the four code fields only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    manufacturer: Hex4
    model: Hex4
    hardware_version: Hex4
    firmware_version: Hex8
    chf_id: Eui64 | None = None
    gpf_id: Eui64 | None = None
    han_variant: str | None = None
    chts_version: str | None = None
    serial: str | None = None
    staged_version: Hex8 | None = None

    @property
    def firmware_int(self) -> int:
        return int(self.firmware_version, 16)

    @property
    def hardware_int(self) -> int:
        return int(self.hardware_version, 16)
