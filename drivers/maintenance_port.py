"""A maintenance-port session: the station's side of the protocol, over any Transport.

Requests are answered by one reply that carries the request's sequence number in `ack`; a request with no answer is
sent again with the same sequence number (the hub repeats its answer, never the action). ACK and NAK frames during a
transfer go to the transfer engine. Errors are the tree in `drivers.errors`.

Nothing the hub says about what it holds is taken on its word: a resumed prefix is proven (PROVE with a fresh nonce)
before a byte after it is sent, and a prefix the hub cannot prove is erased and sent again from zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
import secrets
from dataclasses import dataclass, replace
from typing import Any

from drivers.deframer import Deframer
from drivers.errors import LinkClosed, LinkTimeout, ProofFailed, ProtocolError, TransferRefused
from drivers.frame import (
    BAUD_CONFIRM_S,
    FRAME_OVERHEAD,
    MAX_PAYLOAD,
    NONCE_SIZE,
    PROTOCOL_VERSION,
    ActivationCode,
    Compression,
    Flag,
    Frame,
    HubState,
    MessageType,
    ProofRegion,
    RefuseReason,
    proof_mac,
)
from drivers.jig_driver import (
    Activation,
    ActivationStatus,
    ImageRegion,
    Progress,
    Proof,
    TransferStats,
    Verification,
    VersionInfo,
)
from drivers.transfer import DATA_HEADER_SIZE, TransferEngine, choose_compression
from drivers.transport import BaudRateControl, Transport
from firmware_catalog.hub import HubIdentity
from firmware_catalog.image import UpgradeImage

__all__ = [
    "DEFAULT_LINE_BAUD",
    "MIN_NEGOTIATED_PAYLOAD",
    "PROVE_SECONDS_PER_MIB",
    "ROUND_TRIP_ALLOWANCE_S",
    "WIRE_REGIONS",
    "HubStatus",
    "LinkTiming",
    "MaintenancePort",
    "SessionSettings",
]

MIN_NEGOTIATED_PAYLOAD = 4096
# A DATA frame must carry its 9-byte header and some image; below this the transfer would crawl or stall.
_SMALLEST_USABLE_PAYLOAD = 64
# A hub answers PROVE within reply_timeout + this many seconds per MiB proved (it must read and hash the bytes).
PROVE_SECONDS_PER_MIB = 1.0
_MIB = 1024 * 1024
# The line rate assumed when the transport cannot say (a TCP or USB jig in front of a UART) and `line_baud` is not
# configured: the rate every session opens at.
DEFAULT_LINE_BAUD = 115_200
# One round trip's allowance in a nominal time: adapter latency both ways (16 ms each for an FTDI default latency
# timer) and the hub's turn-around.
ROUND_TRIP_ALLOWANCE_S = 0.05
# The largest answer payload each request can get, for the line time of the answer; 64 covers every fixed answer.
_ANSWER_PAYLOAD = {MessageType.IDENTIFY: 600}
_DEFAULT_ANSWER_PAYLOAD = 64
# An ACK or NAK to a DATA frame: next_offset and a reason byte.
_DATA_ANSWER_BYTES = FRAME_OVERHEAD + 5

# The seam's neutral values and their codes on this wire (drivers.jig_driver).
WIRE_REGIONS = {ImageRegion.STAGED: ProofRegion.STAGED, ImageRegion.RUNNING: ProofRegion.RUNNING}
_REGIONS = {wire: region for region, wire in WIRE_REGIONS.items()}
_STATUSES = {
    ActivationCode.SUCCESS: ActivationStatus.SUCCESS,
    ActivationCode.NO_IMAGE_HELD: ActivationStatus.NO_IMAGE_HELD,
    ActivationCode.HASH_MISMATCH: ActivationStatus.HASH_MISMATCH,
    ActivationCode.ACTIVATION_FAILURE: ActivationStatus.ACTIVATION_FAILURE,
}


@dataclass(frozen=True)
class SessionSettings:
    """The station's side of the negotiation, and how patient it is."""

    max_payload: int = 4096
    window: int = 8
    reply_timeout_s: float = 1.0
    retries: int = 4
    activate_timeout_s: float = 30.0
    min_rto_s: float = 0.2
    max_stalls: int = 6
    compression: bool = True
    # The UART's rate when the transport cannot report it (TCP, USB): every timeout counts line time at this rate.
    line_baud: int | None = None

    def prove_timeout_s(self, length: int) -> float:
        """How long to wait for the answer to a PROVE over `length` bytes: reply timeout + 1 s per MiB."""
        return self.reply_timeout_s + PROVE_SECONDS_PER_MIB * length / _MIB

    def __post_init__(self) -> None:
        if not _SMALLEST_USABLE_PAYLOAD <= self.max_payload <= MAX_PAYLOAD:
            raise ValueError(f"max_payload must be {_SMALLEST_USABLE_PAYLOAD}..{MAX_PAYLOAD}, got {self.max_payload}")
        if not 1 <= self.window <= 255:
            raise ValueError(f"window must be 1..255 frames, got {self.window}")
        if self.line_baud is not None and self.line_baud <= 0:
            raise ValueError(f"line_baud must be positive, got {self.line_baud}")


@dataclass(frozen=True)
class LinkTiming:
    """What a healthy hub on a clean line needs for each part of a flash, at the line's rate: the line time of every
    byte each way, one round-trip allowance per exchange and per window of DATA frames, and the hub's hashing
    (`PROVE_SECONDS_PER_MIB`). Deadlines are built on these (a factor and slack on top, station/job.py).

    `activate_timeout_s` is the session's own bound on a hub's reboot at ACTIVATE: not line time."""

    baud: int
    payload_size: int
    window: int
    activate_timeout_s: float = 30.0

    def line_s(self, nbytes: int) -> float:
        """Seconds to move `nbytes` over the line (8N1: 10 bits a byte)."""
        return nbytes * 10 / self.baud

    def exchange_s(self, answer_payload: int = _DEFAULT_ANSWER_PAYLOAD, request_payload: int = 72) -> float:
        """One request and its answer: both frames' line time and a round trip."""
        return self.line_s(2 * FRAME_OVERHEAD + request_payload + answer_payload) + ROUND_TRIP_ALLOWANCE_S

    @staticmethod
    def hashing_s(nbytes: int) -> float:
        """The hub reading and hashing `nbytes` (VERIFY, PROVE, ACTIVATE's checks)."""
        return PROVE_SECONDS_PER_MIB * nbytes / _MIB

    def data_s(self, nbytes: int) -> float:
        """`nbytes` of image sent raw as DATA frames: frame and DATA header overhead, a round trip per window."""
        room = max(1, self.payload_size - DATA_HEADER_SIZE)
        frames = math.ceil(nbytes / room)
        wire = nbytes + frames * (FRAME_OVERHEAD + DATA_HEADER_SIZE)
        return self.line_s(wire) + math.ceil(frames / self.window) * ROUND_TRIP_ALLOWANCE_S

    def transfer_s(self, total_size: int) -> float:
        """A transfer of the whole image uncompressed: IDENTIFY, BEGIN_TRANSFER, a resume proof, every DATA frame."""
        identify = self.exchange_s(_ANSWER_PAYLOAD[MessageType.IDENTIFY])
        return identify + 2 * self.exchange_s() + self.hashing_s(total_size) + self.data_s(total_size)

    def verify_s(self, total_size: int) -> float:
        """IDENTIFY, VERIFY and PROVE of the whole staged image: the hub hashes it for each."""
        identify = self.exchange_s(_ANSWER_PAYLOAD[MessageType.IDENTIFY])
        return identify + 2 * (self.exchange_s() + self.hashing_s(total_size))

    def activate_s(self, total_size: int) -> float:
        """ACTIVATE (the hub checks the image) and, after its reboot, IDENTIFY, READ_VERSION and PROVE of the running
        image. The reboot itself is bounded by `activate_timeout_s`, not counted here."""
        identify = self.exchange_s(_ANSWER_PAYLOAD[MessageType.IDENTIFY])
        return identify + 3 * self.exchange_s() + 2 * self.hashing_s(total_size)


@dataclass(frozen=True)
class HubStatus:
    state: HubState
    held: int


def _eui64(raw: bytes) -> str | None:
    return None if raw == bytes(8) else "-".join(f"{b:02X}" for b in raw)


class MaintenancePort:
    """One session with one hub over one Transport. Use `async with`, or `start()` and `close()`."""

    def __init__(
        self, transport: Transport, settings: SessionSettings | None = None, baud: BaudRateControl | None = None
    ) -> None:
        self.transport = transport
        self.settings = settings or SessionSettings()
        self.baud = baud
        self.identity: HubIdentity | None = None
        self.payload_size = min(self.settings.max_payload, MIN_NEGOTIATED_PAYLOAD)
        self.window = 1
        self.hub_baud_rates: tuple[int, ...] = ()
        self._deframer = Deframer()
        self._seq = 0
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._inbox: asyncio.Queue[Frame | None] | None = None
        self._closed: LinkClosed | None = None
        self._reader: asyncio.Task[None] | None = None
        # The line, modelled (loop time): when what the station has written will have left it, and when the answers
        # expected to all of it will have come back. A reply timeout starts where the line says the answer can come.
        self._line_free = 0.0
        self._answers_free = 0.0
        # The size of the image last begun, for how long the hub may hash it at VERIFY.
        self.image_size = 0

    @property
    def line_baud(self) -> int:
        """The line's rate: the UART's when the transport has one, else `SessionSettings.line_baud`, else the
        rate sessions open at (`DEFAULT_LINE_BAUD`)."""
        if self.baud is not None and self.baud.baudrate > 0:
            return self.baud.baudrate
        return self.settings.line_baud or DEFAULT_LINE_BAUD

    def line_time(self, nbytes: int) -> float:
        return nbytes * 10 / self.line_baud

    def timing(self) -> LinkTiming:
        """This session's line, for the nominal times of a flash (deadlines)."""
        window = self.window if self.identity is not None else self.settings.window
        return LinkTiming(self.line_baud, self.payload_size, window, self.settings.activate_timeout_s)

    async def __aenter__(self) -> MaintenancePort:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def start(self) -> None:
        if self._reader is None:
            self._reader = asyncio.create_task(self._receive(), name=f"maintenance-port {self.transport.description}")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._lost(LinkClosed(f"{self.transport.description}: session closed"))
        await self.transport.close()

    # plumbing

    async def _receive(self) -> None:
        try:
            while data := await self.transport.reader.read(65536):
                for frames in self._deframer.slices(data):
                    for frame in frames:
                        self._dispatch(frame)
                    # A read already buffered returns without suspending: yield between slices so that a flood of
                    # false starts cannot starve the other slots or a shutdown.
                    await asyncio.sleep(0)
        except (ConnectionError, OSError) as exc:
            self._lost(LinkClosed(f"{self.transport.description}: {exc}"))
        else:
            self._lost(LinkClosed(f"{self.transport.description}: the far end closed the link"))

    def _dispatch(self, frame: Frame) -> None:
        if frame.type in (MessageType.ACK, MessageType.NAK):
            if self._inbox is not None:
                self._inbox.put_nowait(frame)
            return
        waiter = self._pending.get(frame.ack)
        if waiter is not None and not waiter.done():
            waiter.set_result(frame)
        # Anything else is a late answer to a request already answered: dropped.

    def _lost(self, error: LinkClosed) -> None:
        if self._closed is None:
            self._closed = error
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(self._closed)
        if self._inbox is not None:
            self._inbox.put_nowait(None)

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    async def _write(self, frame: Frame, answer_bytes: int = 0) -> float:
        """Write `frame`; returns when (loop time) its last byte will have left the line, behind what is queued.

        `answer_bytes` is the size of the answer it asks for, whose line time is added behind the answers already
        expected: a reply cannot come sooner than the line lets it."""
        if self._closed is not None:
            raise self._closed
        data = frame.encode()
        try:
            self.transport.writer.write(data)
            await self.transport.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise LinkClosed(f"{self.transport.description}: {exc}") from exc
        now = asyncio.get_running_loop().time()
        self._line_free = max(now, self._line_free) + self.line_time(len(data))
        if answer_bytes:
            self._answers_free = max(self._line_free, self._answers_free) + self.line_time(answer_bytes)
        return self._line_free

    async def _write_data(self, frame: Frame) -> float:
        return await self._write(frame, _DATA_ANSWER_BYTES)

    def _answer_due_in(self) -> float:
        """Seconds until the line lets the last expected answer arrive (0 when nothing is queued)."""
        return max(0.0, self._answers_free - asyncio.get_running_loop().time())

    async def request(
        self,
        kind: MessageType,
        expect: MessageType,
        *,
        wait_s: float | None = None,
        retries: int | None = None,
        **fields: Any,
    ) -> Any:
        """Send a request and return the decoded answer of type `expect`, retransmitting on silence."""
        frame = Frame.of(kind, self._next_seq(), **fields)
        return (await self.exchange(frame, {expect}, wait_s=wait_s, retries=retries)).message()

    async def exchange(
        self,
        frame: Frame,
        expect: set[MessageType],
        *,
        wait_s: float | None = None,
        retries: int | None = None,
    ) -> Frame:
        """Send a built request frame; return its answer, which must be one of `expect` (ERROR raises)."""
        await self.start()
        kind = frame.type
        timeout = self.settings.reply_timeout_s if wait_s is None else wait_s
        retries = self.settings.retries if retries is None else retries
        answer = FRAME_OVERHEAD + _ANSWER_PAYLOAD.get(kind, _DEFAULT_ANSWER_PAYLOAD)
        waiter: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pending[frame.seq] = waiter
        waited = 0.0
        try:
            for attempt in range(retries + 1):
                await self._write(frame if attempt == 0 else replace(frame, flags=Flag.RETRANSMISSION), answer)
                # The answer cannot come before the request, everything queued ahead of it and the answer itself
                # have crossed the line: the timeout starts there.
                wait = self._answer_due_in() + timeout
                waited += wait
                try:
                    reply = await asyncio.wait_for(asyncio.shield(waiter), wait)
                    break
                except TimeoutError:
                    continue
            else:
                raise LinkTimeout(
                    f"{self.transport.description}: no answer to {kind.name} after {retries + 1} tries "
                    f"{timeout:.2f} s apart after the line time of what was queued ({waited:.2f} s in all, at "
                    f"{self.line_baud} baud)"
                )
        finally:
            self._pending.pop(frame.seq, None)
        if reply.type == MessageType.ERROR:
            error = reply.message()
            raise ProtocolError(f"hub answered {kind.name} with error {error.code}: {error.detail}")
        if reply.type not in expect:
            wanted = " or ".join(sorted(t.name for t in expect))
            raise ProtocolError(f"hub answered {kind.name} with {reply.type.name}, expected {wanted}")
        return reply

    # the protocol

    async def identify(self) -> HubIdentity:
        """Ask the hub who it is, and agree the payload size and window for this session."""
        s = self.settings
        m = await self.request(
            MessageType.IDENTIFY,
            MessageType.IDENTITY,
            protocol_version=PROTOCOL_VERSION,
            max_payload=s.max_payload,
            window=s.window,
        )
        if m.protocol_version != PROTOCOL_VERSION:
            raise ProtocolError(f"hub speaks protocol version {m.protocol_version}, station {PROTOCOL_VERSION}")
        if m.max_payload < _SMALLEST_USABLE_PAYLOAD:
            raise ProtocolError(
                f"hub offers a payload of {m.max_payload} bytes; a transfer needs at least {_SMALLEST_USABLE_PAYLOAD}"
            )
        self.payload_size = min(s.max_payload, m.max_payload)
        self.window = max(1, min(s.window, m.window))
        self.hub_baud_rates = tuple(m.baud_rates)
        try:
            self.identity = HubIdentity(
                manufacturer=f"{m.manufacturer:04X}",
                model=f"{m.model:04X}",
                hardware_version=f"{m.hardware_version:04X}",
                firmware_version=f"{m.firmware_version:08X}",
                chf_id=_eui64(m.chf_id),
                gpf_id=_eui64(m.gpf_id),
                han_variant=m.han_variant or None,
                chts_version=m.chts_version or None,
                serial=m.serial or None,
                staged_version=f"{m.staged_version:08X}" if m.staged else None,
            )
        except ValueError as exc:
            raise ProtocolError(f"hub identity does not validate: {exc}") from exc
        return self.identity

    async def transfer(self, image: UpgradeImage, progress: Progress | None = None) -> TransferStats:
        """Send the whole Upgrade Image, resuming only from a prefix the hub proves it holds.

        A prefix the hub cannot prove is erased (ERASE) and the image sent from byte 0; a hub that still claims
        bytes after the erase raises `ProofFailed`. `TransferStats.resume_proven` and `erased` say which happened.
        """
        if self.identity is None:
            await self.identify()
        raw = image.raw
        self.image_size = image.total_size
        compression = choose_compression(raw) if self.settings.compression else Compression.NONE
        accepted = await self._begin(image, compression)
        if accepted is None:
            self.settings = replace(self.settings, compression=False)
            return await self.transfer(image, progress)
        start, resume_proven, erased = accepted, None, False
        if start > 0:
            proof = await self.prove(raw, ProofRegion.STAGED, 0, start)
            resume_proven = proof.ok
            if not proof.ok:
                # What the hub holds is not this image's prefix (or not held at all): never build on it.
                await self.erase()
                erased = True
                again = await self._begin(image, compression)
                if again is None:  # the hub accepted this compression a moment ago
                    raise ProtocolError("hub refused a compression after an erase that it had accepted before it")
                if again != 0:
                    raise ProofFailed(
                        ProofRegion.STAGED,
                        again,
                        f"hub could not prove the {start}-byte prefix it offered to resume from, and after an erase "
                        f"still claims {again} bytes of the image",
                    )
                start = 0
        self._inbox = asyncio.Queue()
        if self._closed is not None:
            raise self._closed
        try:
            engine = TransferEngine(
                raw,
                start=start,
                payload_size=self.payload_size,
                window=self.window,
                compression=compression,
                send=self._write_data,
                next_seq=self._next_seq,
                inbox=self._inbox,
                progress=progress,
                min_rto_s=self.settings.min_rto_s,
                # Measured from when a frame leaves the line: the answer's line time and the usual reply allowance.
                initial_rto_s=self.settings.reply_timeout_s + self.line_time(_DATA_ANSWER_BYTES),
                max_stalls=self.settings.max_stalls,
            )
            stats = await engine.run()
        finally:
            self._inbox = None
        stats.resume_proven = resume_proven
        stats.erased = erased
        return stats

    async def _begin(self, image: UpgradeImage, compression: Compression) -> int | None:
        """BEGIN_TRANSFER: the resume offset the hub offers, or None when it refuses the compression."""
        begin = Frame.of(
            MessageType.BEGIN_TRANSFER,
            self._next_seq(),
            total_size=image.total_size,
            sha256=bytes.fromhex(image.manufacturer_image_sha256),
            image_sha256=bytes.fromhex(image.upgrade_image_sha256),
            compression=compression,
        )
        answer = await self.exchange(begin, {MessageType.ACCEPT, MessageType.REFUSE})
        if answer.type == MessageType.REFUSE:
            refusal = answer.message()
            if refusal.reason == RefuseReason.UNSUPPORTED_COMPRESSION and compression != Compression.NONE:
                return None
            raise TransferRefused(refusal.reason, refusal.detail)
        resume: int = answer.message().resume_offset
        if resume > image.total_size:
            raise ProtocolError(f"hub offers to resume at byte {resume} of a {image.total_size}-byte image")
        return resume

    async def prove(self, image: bytes, region: ProofRegion, offset: int = 0, length: int | None = None) -> Proof:
        """Ask the hub to prove it holds `image[offset : offset + length]` in `region` (default: to the end).

        The MAC is keyed by a fresh random nonce, so a hub can answer only from the bytes it holds now. Waits
        `SessionSettings.prove_timeout_s(length)` per try: reply timeout + 1 s per MiB proved.
        """
        if length is None:
            length = len(image) - offset
        if offset < 0 or length < 0 or offset + length > len(image):
            raise ValueError(f"proof over bytes {offset}..{offset + length} of a {len(image)}-byte image")
        nonce = secrets.token_bytes(NONCE_SIZE)
        m = await self.request(
            MessageType.PROVE,
            MessageType.PROOF,
            wait_s=self.settings.prove_timeout_s(length),
            nonce=nonce,
            region=region,
            offset=offset,
            length=length,
        )
        if (m.region, m.offset, m.length) != (region, offset, length):
            raise ProtocolError(
                f"hub answered PROVE(region {int(region)}, {offset}, {length}) about "
                f"(region {m.region}, {m.offset}, {m.length})"
            )
        expected = proof_mac(nonce, region, offset, length, image[offset : offset + length])
        ok = m.held >= offset + length and hmac.compare_digest(bytes(m.mac), expected)
        return Proof(_REGIONS[region], offset, length, m.held, ok)

    async def verify(self, total_size: int | None = None) -> Verification:
        """The hub's own view of what it holds. It hashes the image and checks its signature before it answers: each
        try waits the reply timeout + 1 s per MiB of `total_size` (default: the image last begun in this session)."""
        size = self.image_size if total_size is None else total_size
        m = await self.request(
            MessageType.VERIFY, MessageType.VERIFY_RESULT, wait_s=self.settings.prove_timeout_s(size)
        )
        return Verification(m.held, m.total_size, bytes(m.sha256).hex(), bool(m.signature_ok))

    async def activate(self, sha256: str, image_sha256: str) -> Activation:
        """CS06: the hub checks the Manufacturer Image hash `sha256` and the whole file's `image_sha256` and its own
        rules, reboots, and says what runs now."""
        s = self.settings
        m = await self.request(
            MessageType.ACTIVATE,
            MessageType.ACTIVATE_RESULT,
            sha256=bytes.fromhex(sha256),
            image_sha256=bytes.fromhex(image_sha256),
            retries=max(1, math.ceil(s.activate_timeout_s / s.reply_timeout_s)),
        )
        try:
            code = ActivationCode(m.code)
        except ValueError:
            raise ProtocolError(f"hub answered ACTIVATE with unknown CS06 code {m.code}") from None
        return Activation(_STATUSES[code], f"{m.running_version:08X}")

    async def read_version(self) -> VersionInfo:
        m = await self.request(MessageType.READ_VERSION, MessageType.VERSION)
        return VersionInfo(f"{m.running_version:08X}", f"{m.staged_version:08X}" if m.staged else None)

    async def keepalive(self) -> HubStatus:
        m = await self.request(MessageType.KEEPALIVE, MessageType.ALIVE)
        try:
            return HubStatus(HubState(m.state), m.held)
        except ValueError:
            raise ProtocolError(f"hub reported unknown state {m.state}") from None

    async def abort(self) -> None:
        """Stop an open transfer; the hub keeps what it holds, so a later transfer resumes."""
        await self.request(MessageType.ABORT, MessageType.DONE)

    async def erase(self) -> None:
        """Make the hub forget its staged image and any partial transfer."""
        await self.request(MessageType.ERASE, MessageType.DONE)

    async def reset(self) -> None:
        await self.request(MessageType.RESET, MessageType.DONE)

    async def switch_baud(self, rate: int) -> int:
        """Move both ends to `rate`; if the new rate does not carry frames, both go back. Returns the rate in use."""
        if self.baud is None:
            raise ValueError(f"{self.transport.description} cannot change its line rate")
        previous = self.baud.baudrate
        if rate == previous:
            return rate
        m = await self.request(MessageType.BAUD_SWITCH, MessageType.BAUD_RESULT, baud=rate)
        if not m.accepted:
            return previous
        await self.baud.set_baudrate(rate)
        self._deframer.clear()
        tries = 3
        try:
            await self.request(
                MessageType.KEEPALIVE, MessageType.ALIVE, wait_s=BAUD_CONFIRM_S / (tries + 1), retries=tries - 1
            )
            return rate
        except LinkTimeout:
            await self.baud.set_baudrate(previous)
            self._deframer.clear()
        # The hub goes back on its own after BAUD_CONFIRM_S without a valid frame; keep asking until it has.
        timeout = self.settings.reply_timeout_s
        await self.request(
            MessageType.KEEPALIVE,
            MessageType.ALIVE,
            wait_s=timeout,
            retries=math.ceil(2 * BAUD_CONFIRM_S / timeout) + self.settings.retries,
        )
        return previous
