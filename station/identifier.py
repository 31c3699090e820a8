"""The grammar of the names the station writes into topics, file names, records and logs (docs/station.md,
"Identifiers"), checked at every door: configuration, order import, command-line arguments.

- A **name** (station ID, slot name) becomes an MQTT topic level and part of file names: 1 to 64 of
  `A-Z a-z 0-9 . _ -`, starting with a letter or digit. Nothing in it can be a topic wildcard or separator.
- A **label** (operator ID, facility approval reference) is written on every record and log line: 1 to 128
  printable characters, no control characters, no leading or trailing space.
- An **order reference** is the DCC's, and is kept as the DCC wrote it: 1 to 64 printable ASCII characters (spaces
  inside allowed). Where it becomes a topic level it is percent-encoded (`topic_level`), so a `/`, `#` or `+` in it
  can neither split the topic nor act as a wildcard; the payload carries it unencoded.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

__all__ = ["Label", "Name", "check_label", "check_name", "check_order_ref", "topic_level"]

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ORDER_REF = re.compile(r"[!-~](?:[ -~]{0,62}[!-~])?")
_TOPIC_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-~")


def check_name(value: str) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a name: 1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter or digit "
            "(it becomes an MQTT topic level and part of file names)"
        )
    return value


def check_label(value: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 128 or value != value.strip() or not value.isprintable():
        raise ValueError(f"{value!r} is not a label: 1 to 128 printable characters, no leading or trailing space")
    return value


def check_order_ref(value: str) -> str:
    if not isinstance(value, str) or not ORDER_REF.fullmatch(value):
        raise ValueError(
            f"{value!r} is not an order reference: 1 to 64 printable ASCII characters, no leading or trailing space"
        )
    return value


def topic_level(value: str) -> str:
    """`value` as one MQTT topic level: every byte outside `A-Z a-z 0-9 . _ - ~` percent-encoded (RFC 3986)."""
    return "".join(chr(b) if chr(b) in _TOPIC_SAFE else f"%{b:02X}" for b in value.encode())


Name = Annotated[str, AfterValidator(check_name)]
Label = Annotated[str, AfterValidator(check_label)]
