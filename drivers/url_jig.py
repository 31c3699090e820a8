"""The `serial`, `tcp` and `usb` drivers: the maintenance-port session over a transport opened from a URL.

Configuration (a slot's table): `url` (any form `drivers.transport_url` takes: a device path or pyserial URL,
`tcp://HOST:PORT`, `usb://VID:PID?serial=...`), optional `baud` (the rate to switch to after identify, serial only),
`open_baud` (the rate to open a serial port at, default 115200), `line_baud` (the UART's rate behind a TCP or USB
jig, which the station cannot read from the transport; every timeout and deadline counts line time at it, default
115200), and session tuning `window`, `max_payload`, `reply_timeout_s`.
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import Field

from drivers.driver_options import DriverOptions
from drivers.jig import MaintenancePortJig, OpenedLink
from drivers.maintenance_port import SessionSettings
from drivers.transport import BaudRateControl
from drivers.transport_url import SerialAddress, open_transport, parse_transport_url

__all__ = ["UrlJig", "UrlJigOptions"]


class UrlJigOptions(DriverOptions):
    """A `serial`, `tcp` or `usb` slot's table, typed: a wrong or unknown option is named when the config loads."""

    url: str = Field(min_length=1)
    baud: int | None = Field(default=None, ge=300, le=12_000_000)
    open_baud: int = Field(default=115_200, ge=300, le=12_000_000)
    line_baud: int | None = Field(default=None, ge=300, le=12_000_000)
    window: int = Field(default=8, ge=1, le=255)
    max_payload: int = Field(default=4096, ge=64, le=65535)
    reply_timeout_s: float = Field(default=1.0, gt=0, le=60)


class UrlJig(MaintenancePortJig):
    options_model = UrlJigOptions

    def __init__(self, url: str, settings: SessionSettings | None = None, baud: int | None = None, **options: Any):
        self.url = url
        self._options = options
        parse_transport_url(url)  # a bad URL is a configuration error now, not at the first hub
        super().__init__(self._open, settings, baud)
        if self.line_baud is None and "baudrate" in options:
            self.line_baud = int(options["baudrate"])

    @classmethod
    def from_options(cls, options: UrlJigOptions) -> Self:
        settings = SessionSettings(
            window=options.window,
            max_payload=options.max_payload,
            reply_timeout_s=options.reply_timeout_s,
            line_baud=options.line_baud,
        )
        extra: dict[str, Any] = {}
        if isinstance(parse_transport_url(options.url), SerialAddress):
            extra["baudrate"] = options.open_baud
        return cls(options.url, settings, options.baud, **extra)

    async def _open(self) -> OpenedLink:
        transport = await open_transport(self.url, **self._options)
        return OpenedLink(transport, transport if isinstance(transport, BaudRateControl) else None)
