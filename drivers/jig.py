"""The maintenance-port jig driver, and `flash`: a hub re-flashed through any `JigDriver`.

`MaintenancePortJig` is a transport opener plus the maintenance-port session: it takes any coroutine that opens a
`Transport` (serial, TCP, USB, an in-memory link) and does the rest, reopening the transport after a link error so
that the next call resumes. A transport that cannot be opened (`OSError`: refused, unplugged, missing) is a link
failure like a closed or silent one: every retry loop here counts it against the same `link_retries`
(`LINK_FAILURES`). Once told which hub to expect (`expect`), every IDENTIFY is checked against it, so a hub swapped
for another between two connections raises `HubSwapped` before anything else is sent to it. The seam itself
(`JigDriver` and its values) is `drivers.jig_driver`; the names configuration uses, `drivers.driver_registry`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from drivers.errors import ActivationFailed, HubSwapped, ProofFailed, VerificationFailed
from drivers.jig_driver import (
    LINK_FAILURES,
    Activation,
    ActivationStatus,
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

__all__ = ["FlashResult", "MaintenancePortJig", "OpenedLink", "TransportOpener", "flash"]

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


@dataclass(frozen=True)
class FlashResult:
    """A hub re-flashed: what it runs now, the hash it reported, the proofs it gave, and what each transfer cost.

    `activation` is None when the link dropped during the reboot and the version read back afterwards decided.
    `staged_proof` is the proof of the whole staged envelope before activation, `running_proof` of the whole running
    envelope after it; both are ok in a FlashResult. `erased` is True when an unproven image was erased on the way.
    """

    verification: Verification
    activation: Activation | None
    version: VersionInfo
    staged_proof: Proof
    running_proof: Proof
    attempts: list[TransferStats] = field(default_factory=list)
    erased: bool = False

    @property
    def data_bytes(self) -> int:
        return sum(a.data_bytes for a in self.attempts)


async def _with_link_retries(call: Callable[[], Awaitable[_T]], link_retries: int) -> _T:
    for attempt in range(link_retries + 1):
        try:
            return await call()
        except LINK_FAILURES:
            if attempt == link_retries:
                raise
    raise AssertionError("unreachable")


async def flash(
    driver: JigDriver, image: UpgradeImage, progress: Progress | None = None, link_retries: int = 3
) -> FlashResult:
    """Transfer (resuming after link errors), verify, prove, activate, read back, prove. Raises unless the target
    runs and the hub proved it.

    A hub counts as re-flashed only when its own hash matches the image, its signature check passed, it proved it
    holds the whole envelope before activation (else it is erased and sent the image again, once), activation
    answered CS06 Success (or the link dropped during the reboot), the version read back is the image's, and it
    proved it runs the whole envelope afterwards. Unless the driver already expects a hub, the one identified first
    is expected throughout (a swapped hub raises `HubSwapped`).
    """
    pinned = driver.expected
    if pinned is None:
        driver.expect(await _with_link_retries(driver.identify, link_retries))
    try:
        return await _flash(driver, image, progress, link_retries)
    finally:
        driver.expect(pinned)


async def _transfer_and_verify(
    driver: JigDriver, image: UpgradeImage, progress: Progress | None, link_retries: int
) -> tuple[TransferStats, Verification]:
    stats = await _with_link_retries(lambda: driver.transfer(image, progress), link_retries)
    verification = await _with_link_retries(driver.verify, link_retries)
    if verification.held != image.total_size or verification.sha256 != image.manufacturer_image_sha256:
        raise VerificationFailed(
            f"hub holds {verification.held} of {image.total_size} bytes with hash {verification.sha256}; "
            f"sent {image.manufacturer_image_sha256}"
        )
    if not verification.signature_ok:
        raise VerificationFailed("the hub's own signature check of the image failed")
    return stats, verification


def _proof_failure(proof: Proof, image: UpgradeImage, what: str) -> ProofFailed:
    if proof.held < proof.offset + proof.length:
        why = f"it holds {proof.held} of its {image.total_size} bytes"
    else:
        why = f"it claims {proof.held} bytes but its MAC over them is not the image's"
    return ProofFailed(proof.region, proof.held, f"hub could not prove it holds {what}: {why}")


async def _flash(driver: JigDriver, image: UpgradeImage, progress: Progress | None, link_retries: int) -> FlashResult:
    attempts: list[TransferStats] = []
    stats, verification = await _transfer_and_verify(driver, image, progress, link_retries)
    attempts.append(stats)
    erased = stats.erased
    staged = await driver.prove(image, ImageRegion.STAGED)
    if not staged.ok:
        # The hub's word (ACKs, VERIFY) said it holds the image; its bytes say otherwise. Start again, once.
        await driver.erase()
        erased = True
        stats, verification = await _transfer_and_verify(driver, image, progress, link_retries)
        attempts.append(stats)
        staged = await driver.prove(image, ImageRegion.STAGED)
        if not staged.ok:
            raise _proof_failure(staged, image, "the staged image after an erase and a second transfer")
    target = f"{image.file_version:08X}"
    activation: Activation | None = None
    try:
        activation = await driver.activate(image.manufacturer_image_sha256, image.upgrade_image_sha256)
    except LINK_FAILURES as dropped:
        # The hub may be rebooting into the new image: what it runs after reconnecting decides.
        try:
            version = await _with_link_retries(driver.read_version, link_retries)
        except LINK_FAILURES as again:
            raise dropped from again
    else:
        if activation.status is not ActivationStatus.SUCCESS:
            raise ActivationFailed(
                activation.code,
                int(activation.running_version, 16),
                f"CS06 {activation.code} {activation.status.name}; hub runs {activation.running_version}",
            )
        version = await _with_link_retries(driver.read_version, link_retries)
    if version.running_version != target:
        if activation is None:
            raise ActivationFailed(
                ActivationStatus.ACTIVATION_FAILURE,
                int(version.running_version, 16),
                f"link dropped at ACTIVATE; after reconnecting the hub runs {version.running_version}, "
                f"not the target {target}",
            )
        raise ActivationFailed(
            activation.code,
            int(version.running_version, 16),
            f"hub reported Success but runs {version.running_version}, not the target {target}",
        )
    running = await _with_link_retries(lambda: driver.prove(image, ImageRegion.RUNNING), link_retries)
    if not running.ok:
        raise _proof_failure(running, image, f"it runs the target image {target}")
    return FlashResult(verification, activation, version, staged, running, attempts, erased)
