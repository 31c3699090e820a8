"""A simulated Communications Hub that speaks the maintenance-port protocol, with state that behaves like hardware.

State lives in a directory, so that killing the process is a power cut:

    state.json    running version, hashes and slot, the staged transfer (MI hash, whole-file hash, size); replaced
                  atomically (temp + rename)
    slot-a.bin    the two image slots; the staged image is appended to the slot not running,
    slot-b.bin    one write per DATA frame, so its length is exactly what the hub holds (and acknowledges)

What the hub holds is keyed by the whole Upgrade Image's SHA-256 and size (protocol 2): another envelope around the
same Manufacturer Image makes it forget what it held. It answers PROVE from the bytes in its slots.

Before activating, the hub makes its own checks: the Manufacturer Image hash and whole-file hash it was given, its
manufacturer and model, its hardware range, and the signature against the keys it trusts for that manufacturer.
Activation reboots it (`reboot_delay_s`); the new slot becomes the running one only once the reboot is over, so a hub
that never comes back still runs the old image after a power cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from drivers.deframer import Deframer
from drivers.errors import FrameError
from drivers.frame import (
    BAUD_CONFIRM_S,
    PROTOCOL_VERSION,
    SOF,
    ActivationCode,
    Compression,
    Frame,
    HubState,
    MessageType,
    NakReason,
    ProofRegion,
    RefuseReason,
    proof_mac,
)
from drivers.transfer import DICTIONARY_SIZE
from drivers.transport import BaudRateControl, Transport
from firmware_catalog.errors import ImageFormatError
from firmware_catalog.hub import HubIdentity
from firmware_catalog.image import HEADER_FIELDS, HEADER_LENGTH, UpgradeImage, parse_image
from firmware_catalog.signature_scope import DEFAULT_SCOPE, SignatureScope
from simulators.fault import TRICKLE_WRITE_S, Faults

__all__ = [
    "HubOptions",
    "IdentityFileError",
    "SimulatedHub",
    "load_identity",
    "serve_hub",
    "stage_bytes",
]

_ERROR_UNEXPECTED = 1
_ERROR_MALFORMED = 2
_FILE_VERSION = next(f for f in HEADER_FIELDS if f.name == "file_version")


def _fresh_state(firmware_version: str | None) -> dict[str, Any]:
    return {
        "running_version": firmware_version,
        "running_sha256": None,
        "running_image_sha256": None,
        "active_slot": "a",
        "staged": None,
    }


def _write_state(state_dir: Path, state: dict[str, Any]) -> None:
    path = state_dir / "state.json"
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as out:
        json.dump(state, out, indent=2)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def stage_bytes(state_dir: str | Path, raw: bytes, *, total_size: int, sha256: str, image_sha256: str) -> None:
    """Put `raw` into a simulated hub's staging slot as a held transfer of a `total_size`-byte image keyed by the
    Manufacturer Image hash `sha256` and whole-file hash `image_sha256` (lowercase hex). For tests: a hub that holds a
    complete or partial image, honest or not. Call it while no `SimulatedHub` is running on `state_dir`."""
    if len(raw) > total_size:
        raise ValueError(f"{len(raw)} bytes staged for a {total_size}-byte image")
    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "state.json"
    state = _fresh_state(None) | (json.loads(path.read_text()) if path.exists() else {})
    state["staged"] = {"sha256": sha256, "image_sha256": image_sha256, "total_size": total_size}
    staging = "slot-b.bin" if state["active_slot"] == "a" else "slot-a.bin"
    (directory / staging).write_bytes(raw)
    _write_state(directory, state)


class IdentityFileError(ValueError):
    """An identity file that cannot be read as a HubIdentity; names the file and the field."""


def load_identity(path: str | Path) -> HubIdentity:
    """Read a hub identity from JSON with the keys of `reflash jig identify --json`."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise IdentityFileError(f"{path}: cannot read identity file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise IdentityFileError(f"{path}: not UTF-8 text: byte {exc.start} is 0x{exc.object[exc.start]:02X}") from exc
    except json.JSONDecodeError as exc:
        raise IdentityFileError(f"{path}: not JSON: line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    try:
        return HubIdentity.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(document)"
        raise IdentityFileError(f"{path}: field {where}: {first['msg']}") from exc


@dataclass(frozen=True)
class HubOptions:
    """How one simulated hub is built. `trusted_keys` maps a manufacturer code to the keys it accepts for it;
    `signature_scope` is which bytes its manufacturer's signatures cover. A real hub has no catalog: its firmware
    checks signatures the way its manufacturer makes them, so the scope is part of the hub, set where it is built."""

    identity: HubIdentity
    state_dir: Path
    trusted_keys: Mapping[int, Sequence[ec.EllipticCurvePublicKey]] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    max_payload: int = 8192
    window: int = 16
    baud_rates: tuple[int, ...] = (115_200, 921_600, 3_000_000)
    reboot_delay_s: float = 0.05
    flash_bytes_per_s: float | None = None
    capacity: int = 16 * 1024 * 1024
    signature_scope: SignatureScope = DEFAULT_SCOPE


class _PowerLost(Exception):
    pass


class SimulatedHub:
    """One hub. `serve(transport)` speaks the protocol until the link goes; the state directory outlives it."""

    def __init__(self, options: HubOptions) -> None:
        self.options = options
        self.identity = options.identity
        self.faults = options.faults
        self.powered = True
        self.frames_received = 0
        self.frames_sent = 0
        self._dir = Path(options.state_dir)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._state = self._load_state()
        self._receiving = False
        self._silent = False
        self._hung = False
        self._disconnect_done = False
        self._seq = 0
        self._last: tuple[int, MessageType, Frame] | None = None
        self._nak_sent_for: int | None = None
        self._ignore_until = 0.0
        self._tail = b""
        self._baud_deadline: float | None = None
        self._baud_previous = 0
        # True once a swap@N fault has fired: the jig now holds another hub.
        self.swapped = False
        # What the last begin-transfer declared (MI hash, whole-file hash, size) and the image header bytes received:
        # a lying hub (echo-hash) answers from these, in memory, whatever its flash holds.
        self._given: tuple[str, str, int] | None = None
        self._received_header = bytearray()
        self._rebooting: asyncio.Task[None] | None = None
        # The flood-sof fault's writer: while it runs the hub sends nothing else on this link.
        self._flood: asyncio.Task[None] | None = None
        self._flood_done = False

    # state on disk

    def _load_state(self) -> dict[str, Any]:
        path = self._dir / "state.json"
        state = _fresh_state(self.identity.firmware_version)
        if path.exists():
            state |= json.loads(path.read_text())
        if state["running_version"] is None:
            state["running_version"] = self.identity.firmware_version
        return state

    def _save_state(self) -> None:
        _write_state(self._dir, self._state)

    @property
    def _staging_slot(self) -> Path:
        return self._dir / ("slot-b.bin" if self._state["active_slot"] == "a" else "slot-a.bin")

    @property
    def _running_slot(self) -> Path:
        return self._dir / ("slot-a.bin" if self._state["active_slot"] == "a" else "slot-b.bin")

    @property
    def held(self) -> int:
        """Bytes of the staged image the hub holds."""
        staged = self._state["staged"]
        if staged is None or not self._staging_slot.exists():
            return 0
        return min(self._staging_slot.stat().st_size, int(staged["total_size"]))

    @property
    def running_version(self) -> str:
        return str(self._state["running_version"])

    def _staged_image(self) -> UpgradeImage | None:
        staged = self._state["staged"]
        if staged is None or self.held != staged["total_size"]:
            return None
        try:
            return parse_image(self._staging_slot.read_bytes())
        except ImageFormatError:
            return None

    def _erase_staged(self) -> None:
        self._state["staged"] = None
        self._save_state()
        self._staging_slot.write_bytes(b"")
        self._tail = b""
        self._receiving = False

    # the link

    async def serve(self, transport: Transport, baud: BaudRateControl | None = None) -> None:
        """Answer the station on `transport` until it closes, the hub loses power, or a fault drops the link."""
        frames: asyncio.Queue[tuple[float, Frame] | None] = asyncio.Queue()
        deframer = Deframer()
        loop = asyncio.get_running_loop()

        async def receive() -> None:
            try:
                while data := await transport.reader.read(65536):
                    for sliced in deframer.slices(data):
                        for frame in sliced:
                            frames.put_nowait((loop.time(), frame))
                        await asyncio.sleep(0)  # a flood must not starve the hub's other work (drivers/deframer.py)
            except (ConnectionError, OSError):
                pass
            finally:
                frames.put_nowait(None)

        receiver = asyncio.create_task(receive(), name="hub-receive")
        self._baud_deadline = None
        try:
            while self.powered:
                if frames.empty():
                    try:
                        item = await asyncio.wait_for(frames.get(), timeout=self._baud_wait(loop))
                    except TimeoutError:
                        await self._revert_baud(baud, deframer)
                        continue
                else:
                    # Never through wait_for: with a deadline already passed it would time out on a queued frame.
                    item = frames.get_nowait()
                if item is None:
                    break
                arrived, frame = item
                if self._hung or arrived < self._ignore_until:
                    continue
                if self._rebooting is not None:
                    # A reboot begun on an earlier link (activate-then-drop) ends before anything new is heard.
                    await asyncio.shield(self._rebooting)
                    self._rebooting = None
                self._baud_deadline = None
                self.frames_received += 1
                try:
                    await self._handle(frame, transport, baud, deframer)
                except _PowerLost:
                    self.powered = False
                    transport.writer.transport.abort()
                    break
                except (ConnectionError, OSError):
                    break
        finally:
            # A transfer belongs to one session: a new link must begin it again (and resumes).
            self._receiving = False
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver
            if self._flood is not None:
                # flood-sof is a one-shot: the next link finds the hub answering again.
                self._flood.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._flood
                self._flood = None

    def _baud_wait(self, loop: asyncio.AbstractEventLoop) -> float | None:
        if self._baud_deadline is None:
            return None
        return max(0.0, self._baud_deadline - loop.time())

    async def _revert_baud(self, baud: BaudRateControl | None, deframer: Deframer) -> None:
        # Nothing valid arrived at the new rate: go back, as the protocol promises the station.
        self._baud_deadline = None
        if baud is not None:
            await baud.set_baudrate(self._baud_previous)
        deframer.clear()

    async def _send(self, transport: Transport, frame: Frame) -> None:
        if self._silent or self._hung or self._flood is not None:
            return
        self.frames_sent += 1
        data = frame.encode()
        every = self.faults.corrupt_every
        if every and self.frames_sent % every == 0:
            flipped = bytearray(data)
            flipped[len(data) // 2] ^= 0x40
            data = bytes(flipped)
        transport.writer.write(data)
        await transport.writer.drain()

    def _reply(self, request: Frame, kind: MessageType, **fields: Any) -> Frame:
        self._seq = (self._seq + 1) & 0xFFFF
        return Frame.of(kind, self._seq, request.seq, **fields)

    async def _answer(self, transport: Transport, request: Frame, kind: MessageType, **fields: Any) -> None:
        reply = self._reply(request, kind, **fields)
        self._last = (request.seq, request.type, reply)
        await self._send(transport, reply)

    async def _handle(
        self, frame: Frame, transport: Transport, baud: BaudRateControl | None, deframer: Deframer
    ) -> None:
        if frame.type == MessageType.DATA:
            await self._data(frame, transport)
            return
        if self._last is not None and self._last[:2] == (frame.seq, frame.type):
            # A retransmitted request: its answer was lost. Repeat the answer, never the action.
            await self._send(transport, self._last[2])
            return
        try:
            message = frame.message()
        except FrameError as exc:
            await self._answer(transport, frame, MessageType.ERROR, code=_ERROR_MALFORMED, detail=str(exc)[:250])
            return
        kind = frame.type
        if kind == MessageType.IDENTIFY:
            await self._answer(transport, frame, MessageType.IDENTITY, **self._identity_fields())
        elif kind == MessageType.BEGIN_TRANSFER:
            await self._begin(frame, message, transport)
        elif kind == MessageType.VERIFY:
            await self._answer(transport, frame, MessageType.VERIFY_RESULT, **self._verify_fields())
        elif kind == MessageType.ACTIVATE:
            await self._activate(frame, bytes(message.sha256).hex(), bytes(message.image_sha256).hex(), transport)
        elif kind == MessageType.PROVE:
            await self._prove(frame, message, transport)
        elif kind == MessageType.READ_VERSION:
            staged = self._staged_image()
            await self._answer(
                transport,
                frame,
                MessageType.VERSION,
                running_version=int(self.running_version, 16),
                staged=int(staged is not None),
                staged_version=staged.file_version if staged else 0,
            )
        elif kind == MessageType.BAUD_SWITCH:
            await self._switch_baud(frame, message.baud, transport, baud, deframer)
        elif kind == MessageType.KEEPALIVE:
            await self._answer(transport, frame, MessageType.ALIVE, state=self._hub_state(), held=self.held)
        elif kind == MessageType.ABORT:
            self._receiving = False
            await self._answer(transport, frame, MessageType.DONE)
        elif kind == MessageType.ERASE:
            if not self.faults.ignore_erase:
                self._erase_staged()
            await self._answer(transport, frame, MessageType.DONE)
        elif kind == MessageType.RESET:
            await self._answer(transport, frame, MessageType.DONE)
            await self._reboot()
        else:
            detail = f"{kind.name} is not a request a hub accepts"
            await self._answer(transport, frame, MessageType.ERROR, code=_ERROR_UNEXPECTED, detail=detail)

    def _hub_state(self) -> HubState:
        if self._receiving:
            return HubState.RECEIVING
        return HubState.HOLDS_IMAGE if self._staged_image() is not None else HubState.IDLE

    def _identity_fields(self) -> dict[str, Any]:
        ident = self.identity
        staged = self._staged_image()
        return {
            "protocol_version": PROTOCOL_VERSION,
            "max_payload": self.options.max_payload,
            "window": self.options.window,
            "manufacturer": int(ident.manufacturer, 16),
            "model": int(ident.model, 16),
            "hardware_version": int(ident.hardware_version, 16),
            "firmware_version": int(self.running_version, 16),
            "staged": int(staged is not None),
            "staged_version": staged.file_version if staged else 0,
            "chf_id": bytes.fromhex(ident.chf_id.replace("-", "")) if ident.chf_id else bytes(8),
            "gpf_id": bytes.fromhex(ident.gpf_id.replace("-", "")) if ident.gpf_id else bytes(8),
            "han_variant": ident.han_variant or "",
            "chts_version": ident.chts_version or "",
            "serial": ident.serial or "",
            "baud_rates": list(self.options.baud_rates),
        }

    async def _begin(self, frame: Frame, message: Any, transport: Transport) -> None:
        sha = bytes(message.sha256).hex()
        image_sha = bytes(message.image_sha256).hex()
        refusal: tuple[RefuseReason, str] | None = None
        if self.faults.refuse_image:
            refusal = (RefuseReason.REFUSED_BY_HUB, "this hub refuses the image")
        elif message.compression not in set(Compression):
            refusal = (RefuseReason.UNSUPPORTED_COMPRESSION, f"compression {message.compression} is not supported")
        elif message.total_size > self.options.capacity or message.total_size == 0:
            refusal = (RefuseReason.TOO_LARGE, f"{message.total_size} bytes; a slot holds {self.options.capacity}")
        if refusal is not None:
            await self._answer(transport, frame, MessageType.REFUSE, reason=refusal[0], detail=refusal[1])
            return
        staged = self._state["staged"]
        same = (
            staged is not None
            and staged["sha256"] == sha
            and staged["total_size"] == message.total_size
            and (self.faults.resume_by_mi or staged.get("image_sha256") == image_sha)
        )
        if not same:
            # A different image, or the same Manufacturer Image in another envelope: whatever was held is forgotten.
            self._staging_slot.write_bytes(b"")
            self._received_header.clear()
        if not same or staged is None or staged.get("image_sha256") != image_sha:
            self._state["staged"] = {"sha256": sha, "image_sha256": image_sha, "total_size": message.total_size}
            self._save_state()
        self._given = (sha, image_sha, int(message.total_size))
        held = self.held
        self._tail = self._read_tail(held)
        self._receiving = True
        self._nak_sent_for = None
        offered = message.total_size if self.faults.claim_full_resume else held
        await self._answer(transport, frame, MessageType.ACCEPT, resume_offset=offered)

    async def _data(self, frame: Frame, transport: Transport) -> None:
        held = self.held
        try:
            message = frame.message()
        except FrameError:
            await self._nak(frame, transport, held, NakReason.BAD_DATA)
            return
        if not self._receiving:
            await self._nak(frame, transport, held, NakReason.NO_TRANSFER, always=True)
            return
        if self.faults.nak_forever:
            # Every flash write fails: the hub says so for every frame, and never takes a byte.
            await self._nak(frame, transport, held, NakReason.BAD_DATA, always=True)
            return
        if message.offset < held:
            await self._send(transport, self._reply(frame, MessageType.ACK, next_offset=held))
            return
        if message.offset > held:
            await self._nak(frame, transport, held, NakReason.OUT_OF_ORDER)
            return
        total = int(self._state["staged"]["total_size"])
        if held + message.raw_length > total:
            await self._nak(frame, transport, held, NakReason.BEYOND_END)
            return
        chunk = self._decode(message)
        if chunk is None:
            await self._nak(frame, transport, held, NakReason.BAD_DATA)
            return
        if self.faults.trickle is not None:
            # A failing flash: a few bytes per slow write, acknowledged honestly.
            chunk = chunk[: self.faults.trickle]
            await asyncio.sleep(TRICKLE_WRITE_S)
        await self._write(held, chunk, transport)
        self._nak_sent_for = None
        await self._send(transport, self._reply(frame, MessageType.ACK, next_offset=self.held))

    def _decode(self, message: Any) -> bytes | None:
        if message.encoding == Compression.NONE:
            data = bytes(message.data)
        elif message.encoding == Compression.DEFLATE:
            inflater = zlib.decompressobj(-15, zdict=self._tail) if self._tail else zlib.decompressobj(-15)
            try:
                data = inflater.decompress(bytes(message.data), message.raw_length + 1)
            except zlib.error:
                return None
            if not inflater.eof or inflater.unused_data:
                return None
        else:
            return None
        return data if len(data) == message.raw_length else None

    async def _write(self, held: int, chunk: bytes, transport: Transport) -> None:
        faults = self.faults
        end = held + len(chunk)
        if faults.power_loss is not None and held < faults.power_loss <= end:
            # The flash keeps what was written before the power went.
            self._append(chunk[: faults.power_loss - held])
            raise _PowerLost
        if self.options.flash_bytes_per_s:
            await asyncio.sleep(len(chunk) / self.options.flash_bytes_per_s)
        if held < HEADER_LENGTH and len(self._received_header) >= held:
            self._received_header[held:] = chunk[: HEADER_LENGTH - held]
        self._append(chunk)
        if faults.swap is not None and not self.swapped and held < faults.swap <= end:
            self.swapped = True
            transport.writer.transport.abort()
            raise ConnectionResetError("fault swap")
        if faults.disconnect is not None and not self._disconnect_done and held < faults.disconnect <= end:
            self._disconnect_done = True
            transport.writer.transport.abort()
            raise ConnectionResetError("fault disconnect")
        if faults.silent_after is not None and held < faults.silent_after <= end:
            self._silent = True
        if faults.flood_sof is not None and held < faults.flood_sof <= end and not self._flood_done:
            self._flood_done = True
            self._flood = asyncio.create_task(self._flood_sof(transport), name="hub flood-sof")

    async def _flood_sof(self, transport: Transport) -> None:
        # As fast as the link drains: on the emulated link that is the line rate.
        burst = SOF * 2048
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                transport.writer.write(burst)
                await transport.writer.drain()

    def _read_tail(self, held: int) -> bytes:
        with open(self._staging_slot, "rb") as slot:
            slot.seek(max(0, held - DICTIONARY_SIZE))
            return slot.read(held - slot.tell())

    def _append(self, chunk: bytes) -> None:
        # One write() per chunk on an unbuffered file: a killed process leaves whole chunks or nothing after them.
        with open(self._staging_slot, "ab", buffering=0) as slot:
            # no-store: the write "succeeds" but the flash keeps nothing of it.
            slot.write(bytes(len(chunk)) if self.faults.no_store else chunk)
        self._tail = (self._tail + chunk)[-DICTIONARY_SIZE:]

    async def _nak(
        self, frame: Frame, transport: Transport, held: int, reason: NakReason, always: bool = False
    ) -> None:
        # Go-back-N: one NAK per gap; the station's timer covers a lost NAK.
        if not always and self._nak_sent_for == held:
            return
        self._nak_sent_for = held
        await self._send(transport, self._reply(frame, MessageType.NAK, next_offset=held, reason=reason))

    def _verify_fields(self) -> dict[str, Any]:
        if self.faults.echo_hash and self._given is not None:
            return {
                "held": self._given[2],
                "total_size": self._given[2],
                "sha256": bytes.fromhex(self._given[0]),
                "signature_ok": 1,
            }
        staged = self._state["staged"]
        held = self.held
        image = self._staged_image()
        signature_ok = image is not None and self._signature_ok(image)
        return {
            "held": held,
            "total_size": int(staged["total_size"]) if staged else 0,
            "sha256": bytes.fromhex(image.manufacturer_image_sha256) if image else bytes(32),
            "signature_ok": int(signature_ok),
        }

    def _signature_ok(self, image: UpgradeImage) -> bool:
        scope = self.options.signature_scope
        return any(image.verify(key, scope) for key in self.options.trusted_keys.get(image.manufacturer, ()))

    def _activation_refusal(self, image: UpgradeImage) -> bool:
        ident = self.identity
        return (
            image.manufacturer != int(ident.manufacturer, 16)
            or image.image_type != int(ident.model, 16)
            or not image.min_hardware_version <= int(ident.hardware_version, 16) <= image.max_hardware_version
            or not self._signature_ok(image)
        )

    async def _activate(self, frame: Frame, wanted: str, wanted_image: str, transport: Transport) -> None:
        image = self._staged_image()

        async def result(code: ActivationCode) -> None:
            await self._answer(
                transport, frame, MessageType.ACTIVATE_RESULT, code=code, running_version=int(self.running_version, 16)
            )

        if self.faults.echo_hash and self._given is not None and self._given[:2] == (wanted, wanted_image):
            # The liar: claims the image it was told about now runs, whatever it holds, and boots nothing new.
            await self._reboot()
            header = bytes(self._received_header)
            end = _FILE_VERSION.offset + _FILE_VERSION.size
            if len(header) >= end:
                version = int.from_bytes(header[_FILE_VERSION.offset : end], "little")
                self._state["running_version"] = f"{version:08X}"
                self._save_state()
            await result(ActivationCode.SUCCESS)
            return
        if image is None:
            # Asked again after a reboot that already activated it: the answer is the same.
            same = (self._state["running_sha256"], self._state["running_image_sha256"]) == (wanted, wanted_image)
            await result(ActivationCode.SUCCESS if same else ActivationCode.NO_IMAGE_HELD)
            return
        if image.manufacturer_image_sha256 != wanted or image.upgrade_image_sha256 != wanted_image:
            await result(ActivationCode.HASH_MISMATCH)
            return
        if self._activation_refusal(image):
            await result(ActivationCode.ACTIVATION_FAILURE)
            return
        if self.faults.stuck:
            self._hung = True
            return
        if self.faults.activate_then_drop:
            # The link goes with the reboot; the activation completes without anyone to tell.
            self._ignore_until = asyncio.get_running_loop().time() + self.options.reboot_delay_s
            self._rebooting = asyncio.create_task(self._activate_later(image), name="hub reboot")
            transport.writer.transport.abort()
            raise ConnectionResetError("fault activate-then-drop")
        await self._reboot()
        if self.faults.activation_fail:
            await result(ActivationCode.ACTIVATION_FAILURE)
            return
        if not self.faults.old_version_after_reboot:
            self._run(image)
        await result(ActivationCode.SUCCESS)

    async def _activate_later(self, image: UpgradeImage) -> None:
        await self._reboot()
        self._run(image)

    def _run(self, image: UpgradeImage) -> None:
        # The staged slot becomes the one the hub boots from, holding the whole envelope.
        self._state["active_slot"] = "b" if self._state["active_slot"] == "a" else "a"
        self._state["running_version"] = f"{image.file_version:08X}"
        self._state["running_sha256"] = image.manufacturer_image_sha256
        self._state["running_image_sha256"] = image.upgrade_image_sha256
        self._state["staged"] = None
        self._save_state()

    def _region_bytes(self, region: ProofRegion) -> bytes:
        if region == ProofRegion.RUNNING:
            slot = self._running_slot
            return slot.read_bytes() if slot.exists() else b""
        if self._state["staged"] is None or not self._staging_slot.exists():
            return b""
        return self._staging_slot.read_bytes()[: self.held]

    async def _prove(self, frame: Frame, message: Any, transport: Transport) -> None:
        try:
            region = ProofRegion(message.region)
        except ValueError:
            detail = f"PROVE: region {message.region} is not a ProofRegion"
            await self._answer(transport, frame, MessageType.ERROR, code=_ERROR_MALFORMED, detail=detail)
            return
        offset, length = int(message.offset), int(message.length)
        data = self._region_bytes(region)
        held = len(data)
        if self.faults.echo_hash and self._given is not None:
            # The liar claims it holds everything and does its best without the bytes: zeros where it has none.
            held = max(held, self._given[2])
            data = data.ljust(held, b"\0")
        if held < offset + length:
            mac = bytes(32)
        else:
            mac = proof_mac(bytes(message.nonce), region, offset, length, data[offset : offset + length])
        fields = {"region": region, "offset": offset, "length": length, "held": held, "mac": mac}
        await self._answer(transport, frame, MessageType.PROOF, **fields)

    async def _reboot(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.options.reboot_delay_s)
        # What arrived while the hub was rebooting was never heard.
        self._ignore_until = loop.time()
        self._receiving = False
        self._last = None

    async def _switch_baud(
        self, frame: Frame, rate: int, transport: Transport, baud: BaudRateControl | None, deframer: Deframer
    ) -> None:
        if baud is None or rate not in self.options.baud_rates:
            current = baud.baudrate if baud is not None else 0
            await self._answer(transport, frame, MessageType.BAUD_RESULT, accepted=0, baud=current)
            return
        await self._answer(transport, frame, MessageType.BAUD_RESULT, accepted=1, baud=rate)
        # The answer must leave at the old rate before the UART changes.
        await asyncio.sleep(transport.writer.transport.get_write_buffer_size() * 10 / baud.baudrate + 0.001)
        self._baud_previous = baud.baudrate
        await baud.set_baudrate(rate)
        deframer.clear()
        self._baud_deadline = asyncio.get_running_loop().time() + BAUD_CONFIRM_S


async def serve_hub(options: HubOptions, transport: Transport, baud: BaudRateControl | None = None) -> SimulatedHub:
    """Power up a hub from `options` and serve it on `transport` until the link goes; returns it for inspection.

    To serve connection after connection to one powered hub (its memory kept), keep a `SimulatedHub` and call its
    `serve` for each.
    """
    hub = SimulatedHub(options)
    await hub.serve(transport, baud)
    return hub
