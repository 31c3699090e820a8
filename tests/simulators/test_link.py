"""The emulated link: bytes arrive intact and in order, errors are seeded, closing and cutting behave."""

from __future__ import annotations

import asyncio
import os

import pytest

from simulators.link import Link, LinkSettings


async def _pump(link: Link, data: bytes) -> bytes:
    async def send() -> None:
        for start in range(0, len(data), 5000):
            link.station.writer.write(data[start : start + 5000])
            await link.station.writer.drain()
        link.station.writer.close()

    sender = asyncio.create_task(send())
    received = await link.hub.reader.read(-1)
    await sender
    return received


async def test_bytes_arrive_intact_and_then_eof() -> None:
    data = os.urandom(300_000)
    link = Link(LinkSettings(baud=10_000_000))
    assert await _pump(link, data) == data
    assert link.station_end.bytes_written == len(data)


async def test_errors_and_drops_are_seeded() -> None:
    data = bytes(200_000)
    settings = LinkSettings(baud=10_000_000, error_rate=1e-3, drop_rate=1e-3, seed=7)
    first = await _pump(Link(settings), data)
    second = await _pump(Link(settings), data)
    assert first == second
    assert len(first) < len(data)
    assert any(first)


async def test_mismatched_rates_deliver_noise() -> None:
    link = Link(LinkSettings(baud=1_000_000))
    await link.hub_end.set_baudrate(115_200)
    link.station.writer.write(b"hello world, this is a frame" * 10)
    received = await link.hub.reader.readexactly(280)
    link.cut()
    assert received != b"hello world, this is a frame" * 10


async def test_cut_ends_both_sides() -> None:
    link = Link(LinkSettings(baud=1_000_000))
    link.station.writer.write(bytes(10_000))
    link.cut()
    assert await link.hub.reader.read(-1) == b""
    with pytest.raises(ConnectionResetError):
        await link.station.writer.drain()


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        LinkSettings(error_rate=1.5)
    with pytest.raises(ValueError, match="baud"):
        LinkSettings(baud=0)
