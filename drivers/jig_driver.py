"""The jig driver seam: `JigDriver`, what the station needs from one jig slot, and the neutral values it returns.

Everything the station learns from a hub crosses here, in types that belong to no protocol: an identity, transfer
statistics, the hub's verification, a proof of possession, an activation outcome, the versions it runs. Each driver
maps its own wire codes onto these (the maintenance-port driver in `drivers.maintenance_port`), so the station never
imports a wire format. The enums are numbered as the records keep them: `ActivationStatus` is the GBCS CS06
outcome with GBCS's numbers, which the audit trail stores.

A driver is a `JigDriver` subclass that declares `options_model`, the pydantic model of its slot's `options` table
(`drivers.driver_options.DriverOptions`), and builds itself from a validated one in `from_options`. It is found by
the name a slot gives through the `reflash.jig_drivers` entry-point group (`drivers.driver_registry`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

from drivers.driver_options import DriverOptions, validate_options
from drivers.errors import LinkError
from firmware_catalog.hub import HubIdentity
from firmware_catalog.image import UpgradeImage

__all__ = [
    "LINK_FAILURES",
    "Activation",
    "ActivationStatus",
    "FlashTiming",
    "ImageEncoding",
    "ImageRegion",
    "JigDriver",
    "Progress",
    "Proof",
    "TransferStats",
    "Verification",
    "VersionInfo",
]

# What a retry can cure: the session's link failed (closed, silent), or the transport could not be opened at all
# (OSError from the opener: connection refused, port missing). Retried alike, by the same configured counts.
LINK_FAILURES: tuple[type[Exception], ...] = (LinkError, OSError)

# Called with (bytes acknowledged, total bytes) as a transfer advances.
Progress = Callable[[int, int], None]


class ActivationStatus(IntEnum):
    """How an activation ended: the GBCS use case CS06 Activate Firmware outcome, numbered as GBCS numbers it."""

    SUCCESS = 0
    NO_IMAGE_HELD = 1
    HASH_MISMATCH = 2
    ACTIVATION_FAILURE = 3


class ImageRegion(IntEnum):
    """Which of the hub's images a proof is about (0 and 1 are what `ProofFailed.region` records)."""

    STAGED = 0  # the image being received or held for activation
    RUNNING = 1  # the whole Upgrade Image in the slot the hub boots from (empty before its first activation)


class ImageEncoding(IntEnum):
    """How a transfer encoded the image on its way to the hub."""

    NONE = 0
    DEFLATE = 1


@dataclass
class TransferStats:
    """What one transfer attempt cost. `data_bytes` counts the bytes of image-carrying frames on the wire,
    retransmissions included.

    `resume_proven` is None when nothing was resumed, else whether the hub proved the prefix it offered; `erased` is
    True when an unproven prefix was erased and the image sent from 0 (then `resumed_from` is 0).
    """

    total_size: int
    resumed_from: int
    compression: ImageEncoding
    frames: int = 0
    retransmitted_frames: int = 0
    data_bytes: int = 0
    image_bytes_sent: int = 0
    timeouts: int = 0
    naks: int = 0
    stalls: int = 0
    elapsed_s: float = 0.0
    acknowledged: int = 0
    resume_proven: bool | None = None
    erased: bool = False


@dataclass(frozen=True)
class Verification:
    """The hub's own view of what it holds: bytes held, the image size, its Manufacturer Image hash, its verdict."""

    held: int
    total_size: int
    sha256: str
    signature_ok: bool


@dataclass(frozen=True)
class Activation:
    """An activation's outcome and the firmware version (8 hex digits) running afterwards."""

    status: ActivationStatus
    running_version: str

    @property
    def code(self) -> int:
        """The CS06 outcome as a number, as records keep it."""
        return int(self.status)


@dataclass(frozen=True)
class Proof:
    """A hub's proof of possession: `ok` only when it holds `offset + length` bytes in `region` and showed it has
    those bytes (the maintenance port: its MAC over them, keyed by a fresh nonce, equals the station's own)."""

    region: ImageRegion
    offset: int
    length: int
    held: int
    ok: bool


@dataclass(frozen=True)
class VersionInfo:
    """The firmware versions (8 hex digits) the hub runs and holds staged (None: nothing staged)."""

    running_version: str
    staged_version: str | None


class FlashTiming(Protocol):
    """What a healthy hub on a clean line needs for each part of a flash (seconds), at the line's rate `baud`; the
    station's deadlines are built on these. `activate_timeout_s` bounds the hub's reboot at activation."""

    @property
    def baud(self) -> int: ...

    @property
    def activate_timeout_s(self) -> float: ...

    def transfer_s(self, total_size: int) -> float: ...

    def verify_s(self, total_size: int) -> float: ...

    def activate_s(self, total_size: int) -> float: ...


class JigDriver(abc.ABC):
    """What the station needs from one jig slot with one hub on it.

    Errors are `drivers.errors`: `LinkError` (or `OSError` when the jig cannot be reached) for what a retry can
    cure, `HubRefused` for an answer that is no, `HubSwapped` for another hub on the jig, `ProtocolError` for a fault.
    """

    # The model of this driver's `options` table in a slot (with the slot's `url`); see `from_config`.
    options_model: ClassVar[type[DriverOptions]] = DriverOptions

    # The hub this driver must be talking to; set by `expect`, None = whichever hub answers.
    expected: HubIdentity | None = None

    def expect(self, identity: HubIdentity | None) -> None:
        """From now on, a hub whose identity differs from `identity` (CHF ID, GPF ID, manufacturer, model, hardware
        version, and serial when both have one) raises `HubSwapped`. None stops checking."""
        self.expected = identity

    @classmethod
    def from_config(cls, options: Mapping[str, Any], base_dir: Path | None = None) -> Self:
        """Build the driver from its slot's table (`url` and the `options`), checked against `options_model`.

        Relative `ConfigPath` options are taken from `base_dir` (the configuration file's folder). A wrong or unknown
        option raises `ValueError` naming it."""
        return cls.from_options(validate_options(cls.options_model, options, base_dir))

    @classmethod
    def from_options(cls, options: Any) -> Self:
        """Build the driver from its validated options (an instance of `options_model`)."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from configuration")

    @abc.abstractmethod
    def timing(self) -> FlashTiming:
        """The line this driver talks over, for the nominal time of each part of a flash (deadlines)."""

    @abc.abstractmethod
    async def identify(self) -> HubIdentity: ...

    @abc.abstractmethod
    async def transfer(self, image: UpgradeImage, progress: Progress | None = None) -> TransferStats: ...

    @abc.abstractmethod
    async def verify(self) -> Verification: ...

    @abc.abstractmethod
    async def prove(self, image: UpgradeImage, region: ImageRegion) -> Proof:
        """Have the hub prove it holds the whole of `image` in `region` (offset 0, length total_size)."""

    @abc.abstractmethod
    async def erase(self) -> None:
        """Make the hub forget its staged image and any partial transfer."""

    @abc.abstractmethod
    async def activate(self, sha256: str, image_sha256: str) -> Activation: ...

    @abc.abstractmethod
    async def read_version(self) -> VersionInfo: ...

    @abc.abstractmethod
    async def close(self) -> None: ...
