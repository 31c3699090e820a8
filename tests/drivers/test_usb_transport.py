"""USB jigs end to end: open_transport -> pyusb -> the simulated backend -> a handler on the jig side."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import pytest
import usb.core

from drivers.transport import Transport
from drivers.transport_url import open_transport
from drivers.usb_transport import UsbJigAmbiguousError, UsbJigNotFoundError, default_usb_backend
from simulators.usb_backend import JigHandler, SimulatedUsbBackend, SimulatedUsbJig

JIG_A = SimulatedUsbJig(serial_number="JIG-A", bus=1, port_numbers=(2, 3))
JIG_B = SimulatedUsbJig(serial_number="JIG-B", bus=1, port_numbers=(2, 4))


def greet_then_echo(name: str) -> JigHandler:
    async def serve(transport: Transport) -> None:
        transport.writer.write(f"hello from {name}\n".encode())
        while data := await transport.reader.read(65536):
            transport.writer.write(data)
            await transport.writer.drain()

    return serve


@pytest.fixture
async def backend() -> AsyncIterator[SimulatedUsbBackend]:
    async with SimulatedUsbBackend() as backend:
        await backend.plug(JIG_A, greet_then_echo("JIG-A"))
        await backend.plug(JIG_B, greet_then_echo("JIG-B"))
        yield backend


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("usb://1209:0001?serial=JIG-B", b"hello from JIG-B\n"),
        ("usb://1209:0001?path=1-2.3", b"hello from JIG-A\n"),
        ("usb://1209:0001?path=1-2.4&serial=JIG-B", b"hello from JIG-B\n"),
    ],
)
async def test_identical_jigs_are_told_apart(backend: SimulatedUsbBackend, url: str, expected: bytes) -> None:
    transport = await open_transport(url, backend=backend)
    try:
        assert await asyncio.wait_for(transport.reader.readline(), 5) == expected
        assert JIG_A.serial_number in transport.description or JIG_B.serial_number in transport.description
    finally:
        await transport.close()


async def test_bytes_echo_through_the_bulk_endpoints_in_order(backend: SimulatedUsbBackend) -> None:
    transport = await open_transport("usb://1209:0001?serial=JIG-A", backend=backend)
    try:
        await transport.reader.readline()
        data = os.urandom(1024 * 1024)
        for offset in range(0, len(data), 40_000):
            transport.writer.write(data[offset : offset + 40_000])
            await transport.writer.drain()
        assert await asyncio.wait_for(transport.reader.readexactly(len(data)), 20) == data
    finally:
        await transport.close()


async def test_ids_alone_refuse_to_pick_one_of_two_jigs(backend: SimulatedUsbBackend) -> None:
    with pytest.raises(UsbJigAmbiguousError, match=r"2 devices match.*JIG-A.*1-2\.3.*JIG-B.*1-2\.4"):
        await open_transport("usb://1209:0001", backend=backend)


async def test_no_match_lists_what_is_there(backend: SimulatedUsbBackend) -> None:
    with pytest.raises(UsbJigNotFoundError, match=r"serial=JIG-C.*no such device.*JIG-A"):
        await open_transport("usb://1209:0001?serial=JIG-C", backend=backend)
    with pytest.raises(UsbJigNotFoundError, match="none"):
        await open_transport("usb://1209:0002", backend=backend)


async def test_a_jig_open_twice_is_busy(backend: SimulatedUsbBackend) -> None:
    transport = await open_transport("usb://1209:0001?serial=JIG-A", backend=backend)
    try:
        with pytest.raises(OSError, match="busy"):
            await open_transport("usb://1209:0001?serial=JIG-A", backend=backend)
    finally:
        await transport.close()
    again = await open_transport("usb://1209:0001?serial=JIG-A", backend=backend)
    await again.close()


async def test_unplugging_the_jig_fails_the_stream(backend: SimulatedUsbBackend) -> None:
    transport = await open_transport("usb://1209:0001?serial=JIG-B", backend=backend)
    try:
        await transport.reader.readline()
        await backend.unplug("JIG-B")
        with pytest.raises(OSError, match="No such device"):
            await asyncio.wait_for(transport.reader.read(), 5)
    finally:
        await transport.close()


async def test_open_jig_uses_no_cpu_when_idle(backend: SimulatedUsbBackend) -> None:
    transport = await open_transport("usb://1209:0001?serial=JIG-A", backend=backend)
    try:
        await transport.reader.readline()
        cpu_before = time.process_time()
        await asyncio.sleep(1.0)
        cpu_idle = time.process_time() - cpu_before
        assert cpu_idle < 0.1, f"{cpu_idle:.3f} s of CPU in 1 s of idle USB link"
    finally:
        await transport.close()


async def test_without_a_backend_the_libusb_from_libusb_package_is_used() -> None:
    try:
        backend = default_usb_backend()
    except usb.core.NoBackendError as exc:  # pragma: no cover - a machine where libusb cannot start
        pytest.skip(str(exc))
    assert type(backend).__module__ == "usb.backend.libusb1"
    # No real jig uses the pid.codes test ID, so this reaches libusb and finds nothing.
    with pytest.raises(UsbJigNotFoundError, match="no such device"):
        await open_transport("usb://1209:0001?serial=NOT-HERE")


async def test_backpressure_holds_both_ends_until_the_other_reads() -> None:
    image = os.urandom(4 * 1024 * 1024)
    jig_side: asyncio.Queue[Transport] = asyncio.Queue()

    async def hand_over(transport: Transport) -> None:
        jig_side.put_nowait(transport)
        await asyncio.Event().wait()

    async with SimulatedUsbBackend() as backend:
        await backend.plug(JIG_A, hand_over)
        station = await open_transport("usb://1209:0001", backend=backend)
        jig = await jig_side.get()
        try:
            # Nobody reads at the jig: the station's writer must be held back, not buffer without limit.
            sending = asyncio.create_task(_send(station, image))
            await asyncio.sleep(0.3)
            assert not sending.done()
            assert await asyncio.wait_for(jig.reader.readexactly(len(image)), 20) == image
            await sending
            # And the other way: the jig's writer waits for a station that does not read.
            replying = asyncio.create_task(_send(jig, image))
            await asyncio.sleep(0.3)
            assert not replying.done()
            assert await asyncio.wait_for(station.reader.readexactly(len(image)), 20) == image
            await replying
        finally:
            await station.close()


async def _send(transport: Transport, data: bytes) -> None:
    for offset in range(0, len(data), 65536):
        transport.writer.write(data[offset : offset + 65536])
        await transport.writer.drain()
