"""Serial over a real kernel pty: pyserial opens the slave, the simulator holds the master."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import AsyncIterator

import pytest
import serial
import serial.rfc2217

from drivers.serial_port import SerialTransport, open_serial
from drivers.transport import BaudRateControl
from drivers.transport_url import open_transport
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


async def test_close_gives_up_on_output_a_stuck_far_end_never_reads(pty: PtyPort) -> None:
    transport = await open_serial(pty.path)
    # The simulator never reads: its StreamReader stops at 2 MiB, the kernel buffer fills, the rest stays queued.
    transport.writer.write(bytes(8 * 1024 * 1024))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await transport.close(flush_timeout=0.2)
    assert time.monotonic() - started < 2
    assert not transport.port.is_open


async def test_a_port_in_use_is_refused(pty: PtyPort, serial_end: SerialTransport) -> None:
    with pytest.raises(OSError, match=pty.path):
        await open_serial(pty.path)


class PtyAsUart(serial.Serial):
    """A pty has no modem lines (ENOTTY); a UART behind a jig controller does. Report them idle."""

    cts = dsr = ri = cd = property(lambda self: False)

    def _update_rts_state(self) -> None:
        pass

    def _update_dtr_state(self) -> None:
        pass


class Rfc2217Server:
    """pyserial's own RFC 2217 port manager in front of a serial device: a ser2net-like jig controller."""

    def __init__(self, device: str) -> None:
        self._device = device
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve, daemon=True)]
        self._threads[0].start()

    def _serve(self) -> None:
        connection, _ = self._listener.accept()
        with connection, PtyAsUart(self._device, timeout=0.05) as port:
            lock = threading.Lock()

            class Network:
                def write(self, data: bytes) -> None:
                    with lock:
                        connection.sendall(data)

            # types-pyserial declares both arguments as the rfc2217 client class; pyserial wants any port and writer.
            manager = serial.rfc2217.PortManager(port, Network())  # type: ignore[arg-type]

            def to_network() -> None:
                while not self._stop.is_set():
                    data = port.read(port.in_waiting or 1)
                    if data:
                        Network().write(b"".join(manager.escape(data)))

            pump = threading.Thread(target=to_network, daemon=True)
            pump.start()
            while data := connection.recv(4096):
                port.write(b"".join(manager.filter(data)))
            self._stop.set()
            pump.join()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(5)


# pyserial 3.5's rfc2217 client still calls Thread.setDaemon() and setName().
@pytest.mark.filterwarnings("ignore:set(Daemon|Name):DeprecationWarning")
async def test_rfc2217_controller_carries_bytes_and_baud_rate_changes(pty: PtyPort) -> None:
    server = Rfc2217Server(pty.path)
    try:
        transport = await open_transport(f"rfc2217://127.0.0.1:{server.port}")
        assert isinstance(transport, BaudRateControl)
        try:
            data = os.urandom(100_000)
            transport.writer.write(data)
            await transport.writer.drain()
            assert await asyncio.wait_for(pty.transport.reader.readexactly(len(data)), 10) == data
            pty.transport.writer.write(b"\xff\x00reply")
            assert await asyncio.wait_for(transport.reader.readexactly(7), 10) == b"\xff\x00reply"
            await transport.set_baudrate(57600)
            assert pty.baudrate == 57600
        finally:
            await transport.close()
    finally:
        await asyncio.to_thread(server.close)
