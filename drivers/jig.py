"""The jig driver seam: a small async interface, a registry of drivers by config name, and `flash`.

A driver is a transport opener plus the maintenance-port session: `MaintenancePortJig` takes any coroutine that opens
a `Transport` (serial, TCP, USB, an in-memory link) and does the rest, reopening the transport after a link error
so that the next call resumes. The registry maps the names used in configuration to driver classes, by import path
so that `drivers` never imports the packages that provide them (`sim` lives in `simulators`).
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from drivers.errors import ActivationFailed, LinkError, VerificationFailed
from drivers.frame import ActivationCode
from drivers.maintenance_port import (
    Activation,
    BaudControl,
    MaintenancePort,
    SessionSettings,
    Verification,
    VersionInfo,
)
from drivers.transfer import Progress, TransferStats
from drivers.transport import Transport
from firmware_catalog.hub import HubIdentity
from firmware_catalog.image import UpgradeImage

__all__ = [
    "FlashResult",
    "JigDriver",
    "MaintenancePortJig",
    "OpenedLink",
    "TransportOpener",
    "driver_class",
    "driver_names",
    "flash",
    "register_driver",
]

_T = TypeVar("_T")


class JigDriver(abc.ABC):
    """What the station needs from one jig slot with one hub on it."""

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> JigDriver:
        """Build the driver from its config table; each driver documents its keys."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from configuration")

    @abc.abstractmethod
    async def identify(self) -> HubIdentity: ...

    @abc.abstractmethod
    async def transfer(self, image: UpgradeImage, progress: Progress | None = None) -> TransferStats: ...

    @abc.abstractmethod
    async def verify(self) -> Verification: ...

    @abc.abstractmethod
    async def activate(self, sha256: str) -> Activation: ...

    @abc.abstractmethod
    async def read_version(self) -> VersionInfo: ...

    @abc.abstractmethod
    async def close(self) -> None: ...


@dataclass(frozen=True)
class OpenedLink:
    """What a transport opener returns: the byte stream, and its rate control if it is a UART."""

    transport: Transport
    baud: BaudControl | None = None


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

    async def session(self) -> MaintenancePort:
        """The open session, opening the transport (and identifying, and switching rate) when there is none."""
        if self.port is not None and not self.port.closed:
            return self.port
        opened = await self._opener()
        port = MaintenancePort(opened.transport, self.settings, opened.baud)
        self.port = port
        try:
            await port.identify()
            if self.target_baud and opened.baud is not None and self.target_baud in port.hub_baud_rates:
                await port.switch_baud(self.target_baud)
        except BaseException:
            await self._drop()
            raise
        return port

    async def _drop(self) -> None:
        if self.port is not None:
            port, self.port = self.port, None
            await port.close()

    async def _call(self, call: Callable[[MaintenancePort], Awaitable[_T]]) -> _T:
        port = await self.session()
        try:
            return await call(port)
        except LinkError:
            # The next call opens a fresh transport; the hub keeps what it holds.
            await self._drop()
            raise

    async def identify(self) -> HubIdentity:
        return await self._call(lambda port: port.identify())

    async def transfer(self, image: UpgradeImage, progress: Progress | None = None) -> TransferStats:
        return await self._call(lambda port: port.transfer(image, progress))

    async def verify(self) -> Verification:
        return await self._call(lambda port: port.verify())

    async def activate(self, sha256: str) -> Activation:
        return await self._call(lambda port: port.activate(sha256))

    async def read_version(self) -> VersionInfo:
        return await self._call(lambda port: port.read_version())

    async def close(self) -> None:
        await self._drop()


# Config name -> "module:Class". Imported on first use so that `drivers` depends on no provider package.
_REGISTRY: dict[str, str | type[JigDriver]] = {
    "serial": "drivers.url_jig:UrlJig",
    "sim": "simulators.jig:SimJig",
    "tcp": "drivers.url_jig:UrlJig",
    "usb": "drivers.url_jig:UrlJig",
}


def register_driver(name: str, driver: str | type[JigDriver]) -> None:
    """Make `name` usable in configuration; `driver` is a class or a "module:Class" path."""
    _REGISTRY[name] = driver


def driver_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def driver_class(name: str) -> type[JigDriver]:
    """The driver class configured as `name`. Raises KeyError naming the known drivers."""
    try:
        entry = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown jig driver {name!r}; known: {', '.join(driver_names())}") from None
    if isinstance(entry, str):
        module, _, attribute = entry.partition(":")
        entry = getattr(importlib.import_module(module), attribute)
        if not (isinstance(entry, type) and issubclass(entry, JigDriver)):
            raise TypeError(f"jig driver {name!r} ({_REGISTRY[name]}) is not a JigDriver")
        _REGISTRY[name] = entry
    return entry


@dataclass(frozen=True)
class FlashResult:
    """A hub re-flashed: what it runs now, the hash it reported, and what each transfer attempt cost."""

    verification: Verification
    activation: Activation
    version: VersionInfo
    attempts: list[TransferStats] = field(default_factory=list)

    @property
    def data_bytes(self) -> int:
        return sum(a.data_bytes for a in self.attempts)


async def flash(
    driver: JigDriver, image: UpgradeImage, progress: Progress | None = None, link_retries: int = 3
) -> FlashResult:
    """Transfer (resuming after link errors), verify, activate, read back. Raises unless the target runs.

    A hub counts as re-flashed only when its own hash matches the image, its signature check passed, activation
    answered CS06 Success, and the version read back is the image's.
    """
    attempts: list[TransferStats] = []
    for attempt in range(link_retries + 1):
        try:
            attempts.append(await driver.transfer(image, progress))
            break
        except LinkError:
            if attempt == link_retries:
                raise
    target = f"{image.file_version:08X}"
    verification = await driver.verify()
    if verification.held != image.total_size or verification.sha256 != image.manufacturer_image_sha256:
        raise VerificationFailed(
            f"hub holds {verification.held} of {image.total_size} bytes with hash {verification.sha256}; "
            f"sent {image.manufacturer_image_sha256}"
        )
    if not verification.signature_ok:
        raise VerificationFailed("the hub's own signature check of the image failed")
    activation = await driver.activate(image.manufacturer_image_sha256)
    if activation.code != ActivationCode.SUCCESS:
        raise ActivationFailed(
            activation.code,
            int(activation.running_version, 16),
            f"CS06 {activation.code.value} {activation.code.name}; hub runs {activation.running_version}",
        )
    version = await driver.read_version()
    if version.running_version != target:
        raise ActivationFailed(
            activation.code,
            int(version.running_version, 16),
            f"hub reported Success but runs {version.running_version}, not the target {target}",
        )
    return FlashResult(verification, activation, version, attempts)
