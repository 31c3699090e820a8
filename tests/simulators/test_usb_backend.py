"""The simulated jigs as pyusb sees them: found by usb.core.find, described like libusb describes real devices."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import usb.core
import usb.util

from drivers.transport import Transport
from simulators.usb_backend import SimulatedUsbBackend, SimulatedUsbJig

JIG_A = SimulatedUsbJig(serial_number="JIG-A", bus=1, port_numbers=(2, 3))
JIG_B = SimulatedUsbJig(serial_number="JIG-B", bus=1, port_numbers=(2, 4))


async def idle(transport: Transport) -> None:
    await transport.reader.read()


@pytest.fixture
async def backend() -> AsyncIterator[SimulatedUsbBackend]:
    async with SimulatedUsbBackend() as backend:
        await backend.plug(JIG_A, idle)
        await backend.plug(JIG_B, idle)
        yield backend


def test_find_all_lists_both_identical_jigs_with_their_strings_and_paths(backend: SimulatedUsbBackend) -> None:
    devices = list(usb.core.find(find_all=True, backend=backend, idVendor=0x1209, idProduct=0x0001))
    try:
        assert [(d.serial_number, d.bus, d.port_numbers) for d in devices] == [
            ("JIG-A", 1, (2, 3)),
            ("JIG-B", 1, (2, 4)),
        ]
        assert {d.manufacturer for d in devices} == {"reflash-station"}
        assert {d.product for d in devices} == {"Simulated flashing jig"}
    finally:
        for device in devices:
            usb.util.dispose_resources(device)


def test_descriptor_tree_iterates_to_its_end(backend: SimulatedUsbBackend) -> None:
    device = usb.core.find(backend=backend, custom_match=lambda d: d.serial_number == "JIG-B")
    try:
        # str() walks every configuration, interface, alternate setting and endpoint: it only ends on IndexError.
        text = str(device)
        assert "JIG-B" in text
        [configuration] = list(device)
        [interface] = list(configuration)
        assert [(e.bEndpointAddress, e.wMaxPacketSize) for e in interface] == [(0x01, 512), (0x81, 512)]
    finally:
        usb.util.dispose_resources(device)


def test_a_claimed_jig_cannot_be_claimed_twice(backend: SimulatedUsbBackend) -> None:
    first, second = (usb.core.find(backend=backend, serial_number="JIG-A") for _ in range(2))
    try:
        usb.util.claim_interface(first, 0)
        with pytest.raises(usb.core.USBError, match="busy"):
            usb.util.claim_interface(second, 0)
    finally:
        usb.util.dispose_resources(first)
        usb.util.dispose_resources(second)


def test_read_times_out_when_the_jig_has_nothing_to_say(backend: SimulatedUsbBackend) -> None:
    device = usb.core.find(backend=backend, serial_number="JIG-A")
    try:
        with pytest.raises(usb.core.USBTimeoutError):
            device.read(0x81, 512, 20)
    finally:
        usb.util.dispose_resources(device)
