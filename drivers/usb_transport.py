"""Jigs on USB bulk endpoints, through pyusb.

Which device: `UsbJigMatch` names a vendor and product ID and, because a bench holds many identical jigs with the
same IDs, the device's serial number (its iSerialNumber string) and/or its bus path (`BUS-PORT[.PORT...]`, the
numbering Linux uses in /sys/bus/usb/devices, e.g. `1-2.3`: bus 1, hub port 2, port 3). A serial number follows the
jig wherever it is plugged in; a path names a socket on the bench whatever jig is in it. Every criterion given must
match; if more than one device still matches, opening refuses and lists them (serial numbers and paths) rather than
pick one, so two jigs are never confused. Devices whose serial number cannot be read (permissions) never match a
serial number, and are listed as such.

Which endpoints: the first interface (or the one named) with a bulk IN and a bulk OUT endpoint; the configuration is
set only when the device has none, as libusb advises.

Which backend: libusb 1.0 from the libusb-package wheel, passed explicitly, since pyusb does not find it by itself;
`backend=` replaces it (the simulator's `simulators.usb_backend` in tests).

Threads: each device gets its own reader and writer thread through `drivers.blocking_port` (two rather than one, so
a write never waits for a read to time out). The reader asks for one max-packet at a time by default: pyusb drops
whatever a bulk read had received when it times out, and a single packet cannot be split that way. Jig firmware that
always ends a transfer with a short or zero-length packet can take a larger `read_size` and fewer wake-ups. A write
that the device has not taken within `write_timeout_ms` fails the transport instead of being retried, because pyusb
does not say how much of a timed-out write went out.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import libusb_package
import usb.backend.libusb1
import usb.core
import usb.util

from drivers.blocking_port import open_blocking_port
from drivers.transport import Transport

__all__ = [
    "UsbJigAmbiguousError",
    "UsbJigMatch",
    "UsbJigNotFoundError",
    "default_usb_backend",
    "find_usb_jigs",
    "open_usb",
    "usb_path",
]

# Short enough that closing a transport never waits long for its reader thread, long enough to cost nothing idle.
_READ_TIMEOUT_MS = 200
_WRITE_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class UsbJigMatch:
    """Which USB device is the jig: IDs, and a serial number and/or bus path to tell identical jigs apart."""

    vendor_id: int
    product_id: int
    serial_number: str | None = None
    path: str | None = None
    interface: int | None = None

    def __str__(self) -> str:
        query = [
            f"{key}={value}"
            for key, value in (("serial", self.serial_number), ("path", self.path), ("interface", self.interface))
            if value is not None
        ]
        return f"usb://{self.vendor_id:04x}:{self.product_id:04x}" + ("?" + "&".join(query) if query else "")


class UsbJigNotFoundError(LookupError):
    """No USB device matches; the message lists the devices that have the right IDs, if any."""


class UsbJigAmbiguousError(LookupError):
    """More than one USB device matches; the message lists them so that a serial number or path can be added."""


def usb_path(device: Any) -> str | None:
    """The device's bus path, `BUS-PORT[.PORT...]`, or None when the backend does not know its ports."""
    ports = device.port_numbers
    if device.bus is None or not ports:
        return None
    return f"{device.bus}-{'.'.join(str(port) for port in ports)}"


def default_usb_backend() -> Any:
    """pyusb's libusb 1.0 backend on the libusb library shipped in the libusb-package wheel."""
    backend = usb.backend.libusb1.get_backend(find_library=libusb_package.find_library)
    if backend is None:
        raise usb.core.NoBackendError("libusb 1.0 not found (is the libusb-package wheel installed?)")
    return backend


def _serial_number(device: Any) -> str | None:
    try:
        serial = device.serial_number
    except (usb.core.USBError, ValueError, NotImplementedError):
        return None
    return str(serial) if serial is not None else None


def _describe(device: Any) -> str:
    serial = _serial_number(device)
    return f"serial={serial if serial is not None else '(unreadable)'} path={usb_path(device) or '(unknown)'}"


def find_usb_jigs(match: UsbJigMatch, backend: Any = None) -> list[Any]:
    """Every `usb.core.Device` that `match` accepts (blocking; it reads serial numbers from the devices)."""
    backend = default_usb_backend() if backend is None else backend
    found = []
    for device in usb.core.find(find_all=True, backend=backend, idVendor=match.vendor_id, idProduct=match.product_id):
        if (match.path is None or usb_path(device) == match.path) and (
            match.serial_number is None or _serial_number(device) == match.serial_number
        ):
            found.append(device)
        else:
            # Reading the serial number opened the device; do not leave closing it to the garbage collector.
            usb.util.dispose_resources(device)
    return found


def _select(match: UsbJigMatch, backend: Any) -> Any:
    found = find_usb_jigs(match, backend)
    if len(found) == 1:
        return found[0]
    if found:
        listed = "; ".join(_describe(device) for device in found)
        for device in found:
            usb.util.dispose_resources(device)
        raise UsbJigAmbiguousError(f"{match}: {len(found)} devices match ({listed}); add ?serial= or ?path=")
    same_ids = list(usb.core.find(find_all=True, backend=backend, idVendor=match.vendor_id, idProduct=match.product_id))
    listed = "; ".join(_describe(device) for device in same_ids) or "none"
    for device in same_ids:
        usb.util.dispose_resources(device)
    raise UsbJigNotFoundError(f"{match}: no such device (devices with these IDs: {listed})")


def _bulk_endpoints(device: Any, match: UsbJigMatch) -> tuple[int, Any, Any]:
    try:
        configuration = device.get_active_configuration()
    except usb.core.USBError:
        device.set_configuration()
        configuration = device.get_active_configuration()
    for interface in configuration:
        if interface.bAlternateSetting != 0:
            continue
        if match.interface is not None and interface.bInterfaceNumber != match.interface:
            continue
        endpoints = {
            usb.util.endpoint_direction(endpoint.bEndpointAddress): endpoint
            for endpoint in interface
            if usb.util.endpoint_type(endpoint.bmAttributes) == usb.util.ENDPOINT_TYPE_BULK
        }
        if usb.util.ENDPOINT_IN in endpoints and usb.util.ENDPOINT_OUT in endpoints:
            return interface.bInterfaceNumber, endpoints[usb.util.ENDPOINT_IN], endpoints[usb.util.ENDPOINT_OUT]
    which = "interface" if match.interface is None else f"interface {match.interface}"
    raise UsbJigNotFoundError(f"{match}: no {which} with a bulk IN and a bulk OUT endpoint")


class _UsbPort:
    """One claimed jig interface as a `BlockingPort`."""

    def __init__(self, device: Any, match: UsbJigMatch, read_size: int | None, write_timeout_ms: int) -> None:
        self._device = device
        self._interface, endpoint_in, endpoint_out = _bulk_endpoints(device, match)
        # A kernel driver bound to a vendor interface is rare, and backends that cannot tell raise; neither is fatal.
        with contextlib.suppress(NotImplementedError, usb.core.USBError):
            if device.is_kernel_driver_active(self._interface):
                device.detach_kernel_driver(self._interface)
        usb.util.claim_interface(device, self._interface)
        self._in = endpoint_in.bEndpointAddress
        self._out = endpoint_out.bEndpointAddress
        self._read_size = read_size or endpoint_in.wMaxPacketSize
        self._write_timeout_ms = write_timeout_ms

    def read(self) -> bytes:
        try:
            return bytes(self._device.read(self._in, self._read_size, _READ_TIMEOUT_MS))
        except usb.core.USBTimeoutError:
            return b""

    def write(self, data: bytes) -> None:
        sent = 0
        while sent < len(data):
            sent += self._device.write(self._out, data[sent:] if sent else data, self._write_timeout_ms)

    def close(self) -> None:
        try:
            usb.util.release_interface(self._device, self._interface)
        finally:
            usb.util.dispose_resources(self._device)


def _open_port(match: UsbJigMatch, backend: Any, read_size: int | None, write_timeout_ms: int) -> tuple[_UsbPort, str]:
    device = _select(match, backend)
    try:
        port = _UsbPort(device, match, read_size, write_timeout_ms)
    except BaseException:
        usb.util.dispose_resources(device)
        raise
    description = f"usb {device.idVendor:04x}:{device.idProduct:04x} {_describe(device)}"
    return port, description


async def open_usb(
    match: UsbJigMatch,
    *,
    backend: Any = None,
    read_size: int | None = None,
    write_timeout_ms: int = _WRITE_TIMEOUT_MS,
) -> Transport:
    """Find exactly one device for `match`, claim its bulk interface and return a `Transport` over it.

    Raises `UsbJigNotFoundError` or `UsbJigAmbiguousError` (both `LookupError`) naming the match and the candidates.
    """
    backend = default_usb_backend() if backend is None else backend
    port, description = await asyncio.to_thread(_open_port, match, backend, read_size, write_timeout_ms)
    return await open_blocking_port(port, description)
