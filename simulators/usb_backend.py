"""Simulated USB jigs behind a pyusb backend: `usb.core.find(backend=SimulatedUsbBackend(...))` finds them.

Each plugged `SimulatedUsbJig` presents a device (vendor class, one configuration, one interface with a bulk OUT
endpoint 0x01 and a bulk IN endpoint 0x81), string descriptors for manufacturer, product and serial number, and a bus
and port path, like the libusb backend does. Its bulk endpoints are wired to a simulator-side `Transport` on the event
loop, so a simulated hub (or any `async (Transport) -> None` handler) serves the jig: bytes the host writes to OUT are
what the handler reads, bytes the handler writes are what the host reads from IN.

Backpressure behaves like hardware: when the handler's reader is full, host writes wait (the device NAKs) and time
out; when the host does not read, the handler's `drain()` waits. Reads and writes time out with
`usb.core.USBTimeoutError`, a second claim of a claimed interface fails with EBUSY, and an unplugged jig fails
with ENODEV, as libusb does. Descriptor lookups past the last index raise `IndexError`, which is how pyusb's
iteration over configurations, interfaces and alternate settings learns where to stop.

The backend's methods are called from the host's threads (one pair per opened jig); the simulator side runs on the
event loop that plugged the jig.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace, TracebackType
from typing import Any

import usb.backend
import usb.core

from drivers.transport import Transport

__all__ = ["JigHandler", "SimulatedUsbBackend", "SimulatedUsbJig"]

JigHandler = Callable[[Transport], Awaitable[None]]

_ENDPOINT_OUT = 0x01
_ENDPOINT_IN = 0x81
_LANGID_EN_US = 0x0409
_STRING_MANUFACTURER, _STRING_PRODUCT, _STRING_SERIAL = 1, 2, 3
_DESC_DEVICE, _DESC_STRING = 1, 3
_GET_DESCRIPTOR = 6
_LIBUSB_SPEED_HIGH = 3
_IN_HIGH_WATER = 256 * 1024
_IN_LOW_WATER = 64 * 1024
_READ_LIMIT = 1 << 20


@dataclass(frozen=True)
class SimulatedUsbJig:
    """One jig's identity on the bus. 1209:0001 is the pid.codes test ID, reserved for exactly this."""

    serial_number: str
    bus: int = 1
    port_numbers: tuple[int, ...] = (1,)
    vendor_id: int = 0x1209
    product_id: int = 0x0001
    manufacturer: str = "reflash-station"
    product: str = "Simulated flashing jig"
    max_packet_size: int = 512

    @property
    def path(self) -> str:
        """The bus path `drivers.usb_transport` matches on, e.g. `1-2.3`."""
        return f"{self.bus}-{'.'.join(str(port) for port in self.port_numbers)}"


def _usb_error(message: str, code: int, error_number: int) -> usb.core.USBError:
    return usb.core.USBError(message, error_code=code, errno=error_number)


def _timeout_error() -> usb.core.USBError:
    return usb.core.USBTimeoutError("Operation timed out", error_code=-7, errno=errno.ETIMEDOUT)


def _deadline(timeout_ms: int) -> float | None:
    return None if timeout_ms == 0 else time.monotonic() + timeout_ms / 1000


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class _JigSide(asyncio.Transport):
    """The simulator's end of one jig's bulk pipes, living on the event loop."""

    def __init__(self, device: _Device, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._device = device
        self._protocol = protocol
        self._closing = False
        self._writing_paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        with self._device.lock:
            self._device.to_host += data
            self._device.lock.notify_all()
            full = len(self._device.to_host) > _IN_HIGH_WATER
        if full and not self._writing_paused:
            self._writing_paused = True
            self._protocol.pause_writing()

    def host_took_data(self) -> None:
        with self._device.lock:
            low = len(self._device.to_host) <= _IN_LOW_WATER
        if low and self._writing_paused:
            self._writing_paused = False
            self._protocol.resume_writing()

    def get_write_buffer_size(self) -> int:
        with self._device.lock:
            return len(self._device.to_host)

    def pause_reading(self) -> None:
        self._device.accepting.clear()

    def resume_reading(self) -> None:
        self._device.accepting.set()

    def is_reading(self) -> bool:
        return self._device.accepting.is_set()

    def can_write_eof(self) -> bool:
        return False

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._device.accepting.set()
            self._device.loop.call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def received(self, data: bytes) -> None:
        if not self._closing:
            self._protocol.data_received(data)


@dataclass(eq=False)
class _Device:
    jig: SimulatedUsbJig
    address: int
    loop: asyncio.AbstractEventLoop
    lock: threading.Condition = field(default_factory=threading.Condition)
    accepting: threading.Event = field(default_factory=threading.Event)
    to_host: bytearray = field(default_factory=bytearray)
    configuration: int = 1
    claimed_by: dict[int, object] = field(default_factory=dict)
    plugged: bool = True
    side: _JigSide | None = None
    task: asyncio.Task[None] | None = None

    def check_plugged(self) -> None:
        if not self.plugged:
            raise _usb_error("No such device (it may have been disconnected)", -4, errno.ENODEV)

    def strings(self) -> dict[int, str]:
        return {
            _STRING_MANUFACTURER: self.jig.manufacturer,
            _STRING_PRODUCT: self.jig.product,
            _STRING_SERIAL: self.jig.serial_number,
        }

    def device_descriptor(self) -> SimpleNamespace:
        return SimpleNamespace(
            bLength=18,
            bDescriptorType=_DESC_DEVICE,
            bcdUSB=0x0200,
            bDeviceClass=0,
            bDeviceSubClass=0,
            bDeviceProtocol=0,
            bMaxPacketSize0=64,
            idVendor=self.jig.vendor_id,
            idProduct=self.jig.product_id,
            bcdDevice=0x0100,
            iManufacturer=_STRING_MANUFACTURER,
            iProduct=_STRING_PRODUCT,
            iSerialNumber=_STRING_SERIAL,
            bNumConfigurations=1,
            address=self.address,
            bus=self.jig.bus,
            port_number=self.jig.port_numbers[-1],
            port_numbers=self.jig.port_numbers,
            speed=_LIBUSB_SPEED_HIGH,
        )

    def device_descriptor_bytes(self) -> bytes:
        d = self.device_descriptor()
        return struct.pack(
            "<BBHBBBBHHHBBBB",
            d.bLength,
            d.bDescriptorType,
            d.bcdUSB,
            d.bDeviceClass,
            d.bDeviceSubClass,
            d.bDeviceProtocol,
            d.bMaxPacketSize0,
            d.idVendor,
            d.idProduct,
            d.bcdDevice,
            d.iManufacturer,
            d.iProduct,
            d.iSerialNumber,
            d.bNumConfigurations,
        )


@dataclass
class _Handle:
    device: _Device


class SimulatedUsbBackend(usb.backend.IBackend):  # type: ignore[misc]
    """A pyusb backend presenting the jigs plugged into it. Use it as `async with SimulatedUsbBackend() as b:`."""

    def __init__(self) -> None:
        super().__init__()
        self._devices: list[_Device] = []
        self._lock = threading.Lock()

    async def __aenter__(self) -> SimulatedUsbBackend:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def plug(self, jig: SimulatedUsbJig, handler: JigHandler) -> None:
        """Plug `jig` in and start `handler` serving its bulk endpoints until it returns or the jig is unplugged."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if any(d.plugged and d.jig.path == jig.path for d in self._devices):
                raise ValueError(f"bus path {jig.path} is already occupied")
            device = _Device(jig, address=len(self._devices) + 2, loop=loop)
            self._devices.append(device)
        device.accepting.set()
        reader = asyncio.StreamReader(limit=_READ_LIMIT, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        side = _JigSide(device, protocol)
        device.side = side
        protocol.connection_made(side)
        writer = asyncio.StreamWriter(side, protocol, reader, loop)
        transport = Transport(reader, writer, f"simulated USB jig {jig.serial_number} at {jig.path}")
        device.task = asyncio.create_task(self._serve(handler, transport), name=f"usb jig {jig.serial_number}")

    @staticmethod
    async def _serve(handler: JigHandler, transport: Transport) -> None:
        try:
            await handler(transport)
        finally:
            await transport.close()

    async def unplug(self, serial_number: str) -> None:
        """Pull the jig with this serial number: the host's I/O fails with ENODEV and the handler is cancelled."""
        for device in self._devices:
            if device.plugged and device.jig.serial_number == serial_number:
                await self._unplug(device)
                return
        raise LookupError(f"no plugged jig with serial number {serial_number!r}")

    async def _unplug(self, device: _Device) -> None:
        with device.lock:
            device.plugged = False
            device.lock.notify_all()
        device.accepting.set()
        if device.task is not None:
            device.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await device.task

    async def aclose(self) -> None:
        """Unplug every jig and wait for their handlers to end."""
        for device in self._devices:
            if device.plugged:
                await self._unplug(device)

    # The pyusb backend interface; called from any thread.

    def enumerate_devices(self) -> list[_Device]:
        with self._lock:
            return [device for device in self._devices if device.plugged]

    def get_parent(self, dev: _Device) -> None:
        return None

    def get_device_descriptor(self, dev: _Device) -> SimpleNamespace:
        return dev.device_descriptor()

    def get_configuration_descriptor(self, dev: _Device, config: int) -> SimpleNamespace:
        if config != 0:
            raise IndexError(f"configuration index {config} out of range")
        return SimpleNamespace(
            bLength=9,
            bDescriptorType=2,
            wTotalLength=9 + 9 + 7 + 7,
            bNumInterfaces=1,
            bConfigurationValue=1,
            iConfiguration=0,
            bmAttributes=0x80,
            bMaxPower=50,
            extra_descriptors=[],
        )

    def get_interface_descriptor(self, dev: _Device, intf: int, alt: int, config: int) -> SimpleNamespace:
        if config != 0 or intf != 0 or alt != 0:
            raise IndexError(f"interface index {intf}, alternate setting {alt} out of range")
        return SimpleNamespace(
            bLength=9,
            bDescriptorType=4,
            bInterfaceNumber=0,
            bAlternateSetting=0,
            bNumEndpoints=2,
            bInterfaceClass=0xFF,
            bInterfaceSubClass=0,
            bInterfaceProtocol=0,
            iInterface=0,
            extra_descriptors=[],
        )

    def get_endpoint_descriptor(self, dev: _Device, ep: int, intf: int, alt: int, config: int) -> SimpleNamespace:
        if config != 0 or intf != 0 or alt != 0 or ep not in (0, 1):
            raise IndexError(f"endpoint index {ep} out of range")
        return SimpleNamespace(
            bLength=7,
            bDescriptorType=5,
            bEndpointAddress=(_ENDPOINT_OUT, _ENDPOINT_IN)[ep],
            bmAttributes=0x02,
            wMaxPacketSize=dev.jig.max_packet_size,
            bInterval=0,
            bRefresh=0,
            bSynchAddress=0,
            extra_descriptors=[],
        )

    def open_device(self, dev: _Device) -> _Handle:
        dev.check_plugged()
        return _Handle(dev)

    def close_device(self, dev_handle: _Handle) -> None:
        with self._lock:
            for number, owner in list(dev_handle.device.claimed_by.items()):
                if owner is dev_handle:
                    del dev_handle.device.claimed_by[number]

    def set_configuration(self, dev_handle: _Handle, config_value: int) -> None:
        dev_handle.device.check_plugged()
        if config_value not in (0, 1):
            raise _usb_error("Invalid configuration", -2, errno.EINVAL)
        dev_handle.device.configuration = config_value

    def get_configuration(self, dev_handle: _Handle) -> int:
        dev_handle.device.check_plugged()
        return dev_handle.device.configuration

    def set_interface_altsetting(self, dev_handle: _Handle, intf: int, altsetting: int) -> None:
        if intf != 0 or altsetting != 0:
            raise _usb_error("Invalid parameter", -2, errno.EINVAL)

    def claim_interface(self, dev_handle: _Handle, intf: int) -> None:
        device = dev_handle.device
        device.check_plugged()
        if intf != 0:
            raise _usb_error("Entity not found", -5, errno.ENOENT)
        with self._lock:
            owner = device.claimed_by.setdefault(intf, dev_handle)
        if owner is not dev_handle:
            raise _usb_error("Resource busy", -6, errno.EBUSY)

    def release_interface(self, dev_handle: _Handle, intf: int) -> None:
        with self._lock:
            if dev_handle.device.claimed_by.get(intf) is dev_handle:
                del dev_handle.device.claimed_by[intf]

    def is_kernel_driver_active(self, dev_handle: _Handle, intf: int) -> bool:
        return False

    def detach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        return None

    def clear_halt(self, dev_handle: _Handle, ep: int) -> None:
        return None

    def reset_device(self, dev_handle: _Handle) -> None:
        return None

    def _check_claimed(self, dev_handle: _Handle, ep: int, expected: int) -> _Device:
        device = dev_handle.device
        device.check_plugged()
        if ep != expected:
            raise _usb_error(f"Invalid endpoint 0x{ep:02x}", -2, errno.EINVAL)
        if device.claimed_by.get(0) is not dev_handle:
            raise _usb_error("Interface not claimed", -6, errno.EBUSY)
        return device

    def bulk_write(self, dev_handle: _Handle, ep: int, intf: int, data: Any, timeout: int) -> int:
        device = self._check_claimed(dev_handle, ep, _ENDPOINT_OUT)
        # Wait before taking anything, so that a timeout means nothing was sent, as a NAKed OUT transfer would.
        if not device.accepting.wait(_remaining(_deadline(timeout))):
            raise _timeout_error()
        device.check_plugged()
        payload = bytes(data)
        side = device.side
        if side is not None:
            with contextlib.suppress(RuntimeError):
                device.loop.call_soon_threadsafe(side.received, payload)
        return len(payload)

    def bulk_read(self, dev_handle: _Handle, ep: int, intf: int, buff: Any, timeout: int) -> int:
        device = self._check_claimed(dev_handle, ep, _ENDPOINT_IN)
        deadline = _deadline(timeout)
        with device.lock:
            while not device.to_host:
                device.check_plugged()
                if not device.lock.wait(_remaining(deadline)) and not device.to_host:
                    raise _timeout_error()
            device.check_plugged()
            count = min(len(buff), len(device.to_host))
            buff[:count] = array.array("B", device.to_host[:count])
            del device.to_host[:count]
        side = device.side
        if side is not None:
            with contextlib.suppress(RuntimeError):
                device.loop.call_soon_threadsafe(side.host_took_data)
        return count

    def ctrl_transfer(
        self, dev_handle: _Handle, bmRequestType: int, bRequest: int, wValue: int, wIndex: int, data: Any, timeout: int
    ) -> int:
        device = dev_handle.device
        device.check_plugged()
        if bmRequestType != 0x80 or bRequest != _GET_DESCRIPTOR:
            raise _usb_error("Pipe error", -9, errno.EPIPE)
        kind, index = wValue >> 8, wValue & 0xFF
        if kind == _DESC_DEVICE:
            payload = device.device_descriptor_bytes()
        elif kind == _DESC_STRING and index == 0:
            payload = bytes([4, _DESC_STRING]) + _LANGID_EN_US.to_bytes(2, "little")
        elif kind == _DESC_STRING and index in device.strings():
            text = device.strings()[index].encode("utf-16-le")
            payload = bytes([2 + len(text), _DESC_STRING]) + text
        else:
            raise _usb_error("Pipe error", -9, errno.EPIPE)
        count = min(len(data), len(payload))
        data[:count] = array.array("B", payload[:count])
        return count
