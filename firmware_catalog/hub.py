"""What a hub says about itself on the maintenance port: the facts the policy and every report use."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from firmware_catalog.eui64 import format_eui64, normalise_eui64
from firmware_catalog.hexcode import parse_hex

__all__ = ["Eui64", "Hex4", "Hex8", "HubIdentity", "format_eui64", "normalise_eui64"]


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
