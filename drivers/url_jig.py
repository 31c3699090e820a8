"""The `serial`, `tcp` and `usb` drivers: the maintenance-port session over a transport opened from a URL.

Configuration (a slot's table): `url` (any form `drivers.transport_url` takes: a device path or pyserial URL,
`tcp://HOST:PORT`, `usb://VID:PID?serial=...`), optional `baud` (the rate to switch to after identify, serial only),
`open_baud` (the rate to open a serial port at, default 115200), `line_baud` (the UART's rate behind a TCP or USB
jig, which the station cannot read from the transport; every timeout and deadline counts line time at it, default
115200), and session tuning `window`, `max_payload`, `reply_timeout_s`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drivers.jig import MaintenancePortJig, OpenedLink
from drivers.maintenance_port import SessionSettings
from drivers.serial_port import BaudRateControl
from drivers.transport_url import SerialAddress, open_transport, parse_transport_url

__all__ = ["UrlJig"]


class _SerialBaud:
    """`BaudControl` (what the session wants) over `BaudRateControl` (what the serial transport offers)."""

    def __init__(self, port: BaudRateControl) -> None:
        self._port = port
        self.baud = port.baudrate

    async def set_baud(self, baud: int) -> None:
        await self._port.set_baudrate(baud)
        self.baud = self._port.baudrate


class UrlJig(MaintenancePortJig):
    def __init__(self, url: str, settings: SessionSettings | None = None, baud: int | None = None, **options: Any):
        self.url = url
        self._options = options
        parse_transport_url(url)  # a bad URL is a configuration error now, not at the first hub
        super().__init__(self._open, settings, baud)
        if self.line_baud is None and "baudrate" in options:
            self.line_baud = int(options["baudrate"])

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> UrlJig:
        known = {"url", "baud", "open_baud", "line_baud", "window", "max_payload", "reply_timeout_s"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown jig option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        settings = SessionSettings(
            window=int(options.get("window", 8)),
            max_payload=int(options.get("max_payload", 4096)),
            reply_timeout_s=float(options.get("reply_timeout_s", 1.0)),
            line_baud=int(options["line_baud"]) if "line_baud" in options else None,
        )
        extra: dict[str, Any] = {}
        if isinstance(parse_transport_url(str(options["url"])), SerialAddress):
            extra["baudrate"] = int(options.get("open_baud", 115_200))
        baud = int(options["baud"]) if "baud" in options else None
        return cls(str(options["url"]), settings, baud, **extra)

    async def _open(self) -> OpenedLink:
        transport = await open_transport(self.url, **self._options)
        control = _SerialBaud(transport) if isinstance(transport, BaudRateControl) else None
        return OpenedLink(transport, control)
