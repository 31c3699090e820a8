"""The simulated hub at the frame level: duplicates, gaps, repeated requests, abort and reset."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from drivers.deframer import Deframer
from drivers.driver_registry import driver_class
from drivers.errors import LinkError
from drivers.frame import Compression, Frame, HubState, MessageType, NakReason, encode_message
from firmware_catalog.image import UpgradeImage
from firmware_catalog.signature_scope import DEFAULT_SCOPE, SignatureScope
from simulators.hub import HubOptions, SimulatedHub
from simulators.jig import SimJig
from simulators.link import Link, LinkSettings


class Wire:
    """A bare client: writes frames, reads whole frames back."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.deframer = Deframer()
        self.frames: list[Frame] = []

    def send(self, kind: MessageType, seq: int, **fields: Any) -> None:
        self.link.station.writer.write(Frame.of(kind, seq, **fields).encode())

    async def next(self) -> Frame:
        while not self.frames:
            data = await asyncio.wait_for(self.link.station.reader.read(65536), 5)
            assert data, "link closed"
            self.frames.extend(self.deframer.feed(data))
        return self.frames.pop(0)

    async def silence(self) -> bool:
        try:
            await asyncio.wait_for(self.next(), 0.2)
        except TimeoutError:
            return True
        return False


@pytest.fixture
async def wire(hub_options: Callable[..., HubOptions]) -> AsyncIterator[tuple[Wire, SimulatedHub]]:
    hub = SimulatedHub(hub_options())
    link = Link(LinkSettings(baud=10_000_000))
    serving = asyncio.create_task(hub.serve(link.hub, link.hub_end))
    yield Wire(link), hub
    link.cut()
    await serving


def _data(offset: int, chunk: bytes) -> dict[str, Any]:
    return {"offset": offset, "raw_length": len(chunk), "encoding": Compression.NONE, "data": chunk}


async def test_duplicates_are_acknowledged_not_written_and_a_gap_gets_one_nak(
    wire: tuple[Wire, SimulatedHub], image: UpgradeImage
) -> None:
    client, hub = wire
    sha = bytes.fromhex(image.manufacturer_image_sha256)
    image_sha = bytes.fromhex(image.upgrade_image_sha256)
    begin = {"total_size": image.total_size, "sha256": sha, "image_sha256": image_sha, "compression": 0}
    client.send(MessageType.BEGIN_TRANSFER, 1, **begin)
    accept = await client.next()
    assert (accept.type, accept.ack, accept.message().resume_offset) == (MessageType.ACCEPT, 1, 0)
    raw = image.raw
    client.send(MessageType.DATA, 2, **_data(0, raw[:1000]))
    client.send(MessageType.DATA, 3, **_data(0, raw[:1000]))  # duplicate
    client.send(MessageType.DATA, 4, **_data(2000, raw[2000:3000]))  # gap
    client.send(MessageType.DATA, 5, **_data(3000, raw[3000:4000]))  # still the gap: no second NAK
    replies = [await client.next() for _ in range(3)]
    assert [(f.type, f.ack, f.message().next_offset) for f in replies] == [
        (MessageType.ACK, 2, 1000),
        (MessageType.ACK, 3, 1000),
        (MessageType.NAK, 4, 1000),
    ]
    assert replies[2].message().reason == NakReason.OUT_OF_ORDER
    assert await client.silence()
    assert hub.held == 1000


async def test_a_repeated_request_is_answered_again_not_done_again(
    wire: tuple[Wire, SimulatedHub], image: UpgradeImage
) -> None:
    client, hub = wire
    sha = bytes.fromhex(image.manufacturer_image_sha256)
    image_sha = bytes.fromhex(image.upgrade_image_sha256)
    begin = {"total_size": image.total_size, "sha256": sha, "image_sha256": image_sha, "compression": 0}
    client.send(MessageType.BEGIN_TRANSFER, 1, **begin)
    first = await client.next()
    client.send(MessageType.DATA, 2, **_data(0, image.raw[:1000]))
    assert (await client.next()).message().next_offset == 1000
    client.send(MessageType.BEGIN_TRANSFER, 1, **begin)  # its answer was "lost": same seq again
    again = await client.next()
    assert again == first  # the stored answer, byte for byte; a fresh one would offer to resume at 1000
    client.send(MessageType.BEGIN_TRANSFER, 3, **begin)
    assert (await client.next()).message().resume_offset == 1000
    assert hub.held == 1000


async def test_data_without_a_transfer_is_refused(wire: tuple[Wire, SimulatedHub]) -> None:
    client, _ = wire
    client.send(MessageType.DATA, 1, **_data(0, b"x" * 10))
    nak = await client.next()
    assert (nak.type, nak.message().reason) == (MessageType.NAK, NakReason.NO_TRANSFER)


async def test_a_request_cut_short_or_too_long_is_answered_error_2_naming_the_field(
    wire: tuple[Wire, SimulatedHub],
) -> None:
    client, hub = wire
    activate = encode_message(MessageType.ACTIVATE, sha256=bytes(32), image_sha256=bytes(32))
    prove = encode_message(MessageType.PROVE, nonce=bytes(16), region=0, offset=0, length=4096)
    cases = [
        (MessageType.ACTIVATE, activate[:-1], "ACTIVATE: image_sha256 at byte 46"),  # a 31-byte hash
        (MessageType.ACTIVATE, activate + b"\x00", "ACTIVATE: end at byte 78"),
        (MessageType.PROVE, prove[:-1], "PROVE: length at byte 35"),  # a truncated u32 at the end
    ]
    for seq, (kind, payload, detail) in enumerate(cases, start=1):
        client.link.station.writer.write(Frame(kind, seq, 0, payload).encode())
        answer = await client.next()
        assert answer.type == MessageType.ERROR
        error = answer.message()
        assert (error.code, answer.ack) == (2, seq)
        assert error.detail.startswith(detail), error.detail
    assert hub.held == 0
    assert hub.running_version == "04000007"


async def test_abort_mid_transfer_keeps_what_the_hub_holds(
    make_jig: Callable[..., SimJig], random_image: UpgradeImage
) -> None:
    jig = make_jig()
    port = await jig.session()
    aborting: list[asyncio.Task[None]] = []

    def progress(done: int, total: int) -> None:
        if done > 100_000 and not aborting:
            aborting.append(asyncio.create_task(port.abort()))

    with pytest.raises(LinkError, match="no transfer open"):
        await jig.transfer(random_image, progress)
    status = await (await jig.session()).keepalive()
    assert status.state == HubState.IDLE
    assert status.held > 100_000
    stats = await jig.transfer(random_image)
    assert stats.resumed_from == status.held


async def test_sim_driver_from_config(tmp_path: Any) -> None:
    jig = driver_class("sim").from_config({"state_dir": tmp_path, "firmware": "04000009", "reboot_delay_s": 0})
    try:
        identity = await jig.identify()
    finally:
        await jig.close()
    assert identity.firmware_version == "04000009"


def test_sim_driver_signature_scope_from_config(tmp_path: Any) -> None:
    """A `sim` slot states its hub's signature scope; a `swap_to` hub without one keeps the first hub's; an unknown
    scope is refused naming the key."""
    config = {
        "state_dir": tmp_path / "a",
        "signature_scope": "manufacturer-image",
        "swap_to": {"state_dir": tmp_path / "b", "firmware": "04000008"},
    }
    jig = driver_class("sim").from_config(config)
    assert isinstance(jig, SimJig)
    assert jig.hub_options.signature_scope is SignatureScope.MANUFACTURER_IMAGE
    assert jig.swap_to is not None
    assert jig.swap_to.signature_scope is SignatureScope.MANUFACTURER_IMAGE
    plain = SimJig.from_config({"state_dir": tmp_path / "c"})
    assert plain.hub_options.signature_scope is DEFAULT_SCOPE
    with pytest.raises(ValueError, match="signature_scope"):
        driver_class("sim").from_config({"state_dir": tmp_path / "d", "signature_scope": "whole-file"})
