"""The maintenance-port jig driver: any transport behind the maintenance-port session, as a `JigDriver`.

`MaintenancePortJig` is a transport opener plus the maintenance-port session: it takes any coroutine that opens a
`Transport` (serial, TCP, USB, an in-memory link) and does the rest, reopening the transport after a link error so
that the next call resumes. A transport that cannot be opened (`OSError`: refused, unplugged, missing) is a link
failure like a closed or silent one: every retry loop here counts it against the same `link_retries`
(`LINK_FAILURES`). Once told which hub to expect (`expect`), every IDENTIFY is checked against it, so a hub swapped
for another between two connections raises `HubSwapped` before anything else is sent to it. The seam itself
(`JigDriver` and its values) is `drivers.jig_driver`; the names configuration uses, `drivers.driver_registry`; the
flash sequence every driver is run through (the station's job and `reflash jig flash` alike), `station/flash.py`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from drivers.errors import HubSwapped
from drivers.jig_driver import (
    LINK_FAILURES,
    Activation,
    ImageRegion,
    JigDriver,
    Progress,
    Proof,
    TransferStats,
    Verification,
    VersionInfo,
)
from drivers.maintenance_port import (
    DEFAULT_LINE_BAUD,
    MIN_NEGOTIATED_PAYLOAD,
    WIRE_REGIONS,
    LinkTiming,
    MaintenancePort,
    SessionSettings,
)
from drivers.transport import BaudRateControl, Transport
from firmware_catalog.hub import HubIdentity
from firmware_catalog.image import UpgradeImage

__all__ = ["MaintenancePortJig", "OpenedLink", "TransportOpener"]

_T = TypeVar("_T")


@dataclass(frozen=True)
class OpenedLink:
    """What a transport opener returns: the byte stream, and its rate control if it is a UART."""

    transport: Transport
    baud: BaudRateControl | None = None


TransportOpener = Callable[[], Awaitable[OpenedLink]]


class MaintenancePortJig(JigDriver):
    """A driver made of a transport opener and the maintenance-port session. `baud`: rate to switch to, if any."""

    def __init__(
        self, opener: TransportOpener, settings: SessionSettings | None = None, baud: int | None = None
    ) -> None:
        self._opener = opener
        self.settings = settings or SessionSettings()
        self.target_baud = baud
        self.port: MaintenancePort | None = None
        # The line's rate before a session has said (drivers that know it from their configuration set it).
        self.line_baud: int | None = self.settings.line_baud
        # The size of the image last transferred: how long VERIFY may take the hub to hash, on any session.
        self._image_size = 0

    def timing(self) -> LinkTiming:
        if self.port is not None and not self.port.closed:
            return self.port.timing()
        s = self.settings
        payload = min(s.max_payload, MIN_NEGOTIATED_PAYLOAD)
        return LinkTiming(self.line_baud or DEFAULT_LINE_BAUD, payload, s.window, s.activate_timeout_s)

    async def session(self) -> MaintenancePort:
        """The open session, opening the transport (and identifying, and switching rate) when there is none."""
        if self.port is not None and not self.port.closed:
            return self.port
        opened = await self._opener()
        port = MaintenancePort(opened.transport, self.settings, opened.baud)
        self.port = port
        try:
            self._check(await port.identify())
            if self.target_baud and opened.baud is not None and self.target_baud in port.hub_baud_rates:
                await port.switch_baud(self.target_baud)
        except BaseException:
            await self._drop()
            raise
        return port

    def _check(self, found: HubIdentity) -> None:
        if self.expected is not None:
            fields = HubSwapped.differences(self.expected, found)
            if fields:
                raise HubSwapped(self.expected, found, fields)

    async def _drop(self) -> None:
        if self.port is not None:
            port, self.port = self.port, None
            await port.close()

    async def _call(self, call: Callable[[MaintenancePort], Awaitable[_T]]) -> _T:
        port = await self.session()
        try:
            return await call(port)
        except LINK_FAILURES:
            # The next call opens a fresh transport; the hub keeps what it holds.
            await self._drop()
            raise

    async def identify(self) -> HubIdentity:
        async def identify(port: MaintenancePort) -> HubIdentity:
            found = await port.identify()
            try:
                self._check(found)
            except HubSwapped:
                await self._drop()
                raise
            return found

        return await self._call(identify)

    async def transfer(self, image: UpgradeImage, progress: Progress | None = None) -> TransferStats:
        self._image_size = image.total_size
        return await self._call(lambda port: port.transfer(image, progress))

    async def verify(self) -> Verification:
        return await self._call(lambda port: port.verify(self._image_size))

    async def prove(self, image: UpgradeImage, region: ImageRegion) -> Proof:
        return await self._call(lambda port: port.prove(image.raw, WIRE_REGIONS[region]))

    async def erase(self) -> None:
        await self._call(lambda port: port.erase())

    async def activate(self, sha256: str, image_sha256: str) -> Activation:
        return await self._call(lambda port: port.activate(sha256, image_sha256))

    async def read_version(self) -> VersionInfo:
        return await self._call(lambda port: port.read_version())

    async def close(self) -> None:
        await self._drop()
