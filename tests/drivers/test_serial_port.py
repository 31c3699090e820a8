"""Serial over a real kernel pty: pyserial opens the slave, the simulator holds the master."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import pytest

from drivers.serial_port import BaudRateControl, SerialTransport, open_serial
from simulators.pty_port import PtyPort, open_pty_port

IMAGE_SIZE = 4 * 1024 * 1024


@pytest.fixture
async def pty() -> AsyncIterator[PtyPort]:
    port = await open_pty_port()
    yield port
    await port.close()


@pytest.fixture
async def serial_end(pty: PtyPort) -> AsyncIterator[SerialTransport]:
    transport = await open_serial(pty.path)
    yield transport
    await transport.close()


async def test_large_image_reaches_a_slow_reader_intact_and_the_waiting_writer_stays_idle(
    pty: PtyPort, serial_end: SerialTransport
) -> None:
    image = os.urandom(IMAGE_SIZE)
    stalled = asyncio.Event()
    resume = asyncio.Event()

    async def slow_reader() -> bytes:
        received = bytearray()
        reads = 0
        while len(received) < len(image):
            received += await pty.transport.reader.read(4096)
            reads += 1
            if reads % 32 == 0:
                # Let the kernel buffer and asyncio's write buffer fill, so the writer meets partial writes.
                await asyncio.sleep(0.002)
            if reads == 64:
                stalled.set()
                await resume.wait()
        return bytes(received)

    async def writer() -> None:
        # Unaligned chunks make some writes fill the kernel buffer exactly and others leave a partial write.
        view = memoryview(image)
        for offset in range(0, len(image), 65_521):
            serial_end.writer.write(view[offset : offset + 65_521])
            await serial_end.writer.drain()

    reading = asyncio.create_task(slow_reader())
    writing = asyncio.create_task(writer())
    await stalled.wait()
    await asyncio.sleep(0.05)
    assert serial_end.writer.transport.get_write_buffer_size() > 0, "the writer was never held back"
    # The reader is stalled and the writer blocked in drain(): a busy-looping adapter would burn a core here.
    cpu_before = time.process_time()
    await asyncio.sleep(0.5)
    cpu_while_blocked = time.process_time() - cpu_before
    resume.set()
    await writing
    received = await reading
    assert len(received) == len(image)
    assert received == image
    assert cpu_while_blocked < 0.1, f"{cpu_while_blocked:.3f} s of CPU in 0.5 s with a blocked writer"


async def test_reverse_direction_delivers_every_byte_in_order(pty: PtyPort, serial_end: SerialTransport) -> None:
    data = os.urandom(512 * 1024)
    pty.transport.writer.write(data)
    await pty.transport.writer.drain()
    assert await serial_end.reader.readexactly(len(data)) == data


async def test_open_link_uses_no_cpu_when_idle(pty: PtyPort, serial_end: SerialTransport) -> None:
    serial_end.writer.write(b"ping")
    assert await pty.transport.reader.readexactly(4) == b"ping"
    cpu_before = time.process_time()
    await asyncio.sleep(1.0)
    cpu_idle = time.process_time() - cpu_before
    assert cpu_idle < 0.1, f"{cpu_idle:.3f} s of CPU in 1 s of idle link"


async def test_baud_rate_changes_on_the_open_port(pty: PtyPort, serial_end: SerialTransport) -> None:
    assert isinstance(serial_end, BaudRateControl)
    assert serial_end.baudrate == 115200
    serial_end.writer.write(b"sync")
    await serial_end.set_baudrate(921600)
    assert serial_end.baudrate == 921600
    assert pty.baudrate == 921600
    assert await pty.transport.reader.readexactly(4) == b"sync"
    serial_end.writer.write(b"fast")
    assert await pty.transport.reader.readexactly(4) == b"fast"


async def test_bad_baud_rate_keeps_the_old_one(serial_end: SerialTransport) -> None:
    with pytest.raises(ValueError, match="still at 115200"):
        await serial_end.set_baudrate(12_345_678_901)
    assert serial_end.baudrate == 115200


async def test_far_end_closing_ends_the_stream(pty: PtyPort, serial_end: SerialTransport) -> None:
    pty.transport.writer.write(b"bye")
    await pty.transport.writer.drain()
    assert await serial_end.reader.readexactly(3) == b"bye"
    await pty.close()
    assert await asyncio.wait_for(serial_end.reader.read(), timeout=5) == b""


async def test_pyserial_url_without_a_descriptor_runs_on_threads() -> None:
    transport = await open_serial("loop://")
    try:
        assert isinstance(transport, BaudRateControl)
        # loop:// queues byte by byte, so keep this small.
        data = os.urandom(20_000)
        transport.writer.write(data)
        await transport.writer.drain()
        assert await transport.reader.readexactly(len(data)) == data
        await transport.set_baudrate(921600)
        assert transport.baudrate == 921600
    finally:
        await transport.close()
