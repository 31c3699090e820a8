"""Transport URLs: where a jig is, as one string in config and on the command line, and opening it.

| Form                                   | Opens                                                        |
|----------------------------------------|--------------------------------------------------------------|
| `/dev/ttyUSB0`, `/dev/pts/7`           | a local serial device (`drivers.serial_port`)                |
| `rfc2217://host:port`, `loop://`, ...  | any other pyserial URL handler (`drivers.serial_port`)       |
| `tcp://host:port`, `socket://host:port`| a TCP connection (`drivers.tcp_transport`); `[::1]` for IPv6 |
| `usb://VID:PID`                        | the only USB device with these hex IDs (`drivers.usb_transport`) |
| `usb://VID:PID?serial=SN`              | ... whose serial number string is SN (percent-encode `&`, `=`) |
| `usb://VID:PID?path=BUS-PORT[.PORT]`   | ... at this bus path, e.g. `1-2.3`                           |
| `...&interface=N`                      | ... using interface N rather than the first bulk one         |

`parse_transport_url` checks a URL without opening anything (for validating config when it loads);
`open_transport` parses and opens. Both raise `TransportUrlError` (a `ValueError`) naming the URL and what is wrong
with it; failures to open are the transports' own (`OSError`, `LookupError`, `TimeoutError`), also naming the URL.

Transports are registered by URL scheme (`TransportKind`, `register_transport`; a device path is the scheme "").
Each kind's implementation is imported only when a URL of that kind is opened (a USB address also when one is
parsed), so a station of TCP jigs never imports pyserial or pyusb.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from drivers.transport import Transport

if TYPE_CHECKING:
    from drivers.usb_transport import UsbJigMatch

__all__ = [
    "SerialAddress",
    "TcpAddress",
    "TransportAddress",
    "TransportKind",
    "TransportUrlError",
    "open_transport",
    "parse_transport_url",
    "register_transport",
    "transport_schemes",
]

_PYSERIAL_SCHEMES = ("rfc2217", "loop", "spy", "alt", "hwgrep", "cp2110")
_USB_QUERY_KEYS = ("serial", "path", "interface")
_HEX_ID = re.compile(r"[0-9A-Fa-f]{4}")
_USB_PATH = re.compile(r"\d+-\d+(\.\d+)*")


class TransportUrlError(ValueError):
    """A transport URL that cannot be understood; the message quotes it and says which part is wrong."""

    def __init__(self, url: str, problem: str) -> None:
        super().__init__(f"transport URL {url!r}: {problem}")
        self.url = url
        self.problem = problem


@dataclass(frozen=True)
class SerialAddress:
    """A serial device path or pyserial URL, passed to pyserial as it is."""

    url: str


@dataclass(frozen=True)
class TcpAddress:
    """A TCP host and port."""

    host: str
    port: int


# What the built-in kinds parse to; a registered kind may have an address type of its own.
TransportAddress: TypeAlias = "SerialAddress | TcpAddress | UsbJigMatch"


def _parse_tcp(url: str) -> TcpAddress:
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TransportUrlError(url, f"bad host or port ({exc})") from None
    if not parts.hostname:
        raise TransportUrlError(url, "no host (expected tcp://HOST:PORT)")
    if port is None or port == 0:
        raise TransportUrlError(url, "no port (expected tcp://HOST:PORT, port 1-65535)")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise TransportUrlError(url, "unexpected path, query, fragment or user after tcp://HOST:PORT")
    return TcpAddress(parts.hostname, port)


def _parse_serial(url: str) -> SerialAddress:
    return SerialAddress(url)


def _parse_usb(url: str) -> UsbJigMatch:
    from drivers.usb_transport import UsbJigMatch

    rest = url[len("usb://") :]
    ids, _, query = rest.partition("?")
    vendor, _, product = ids.partition(":")
    for name, value in (("vendor ID", vendor), ("product ID", product)):
        if not _HEX_ID.fullmatch(value):
            raise TransportUrlError(
                url, f"{name} {value!r} is not 4 hex digits (expected usb://VID:PID, e.g. 1209:0001)"
            )
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise TransportUrlError(url, f"query {query!r} is not key=value pairs joined by &") from None
    options: dict[str, str] = {}
    for key, value in pairs:
        if key not in _USB_QUERY_KEYS:
            raise TransportUrlError(url, f"unknown option {key!r} (known: {', '.join(_USB_QUERY_KEYS)})")
        if key in options:
            raise TransportUrlError(url, f"option {key!r} given twice")
        if not value:
            raise TransportUrlError(url, f"option {key!r} is empty")
        options[key] = value
    path = options.get("path")
    if path is not None and not _USB_PATH.fullmatch(path):
        raise TransportUrlError(url, f"path {path!r} is not BUS-PORT[.PORT...] (e.g. 1-2.3)")
    interface = options.get("interface")
    if interface is not None and not (interface.isdigit() and int(interface) <= 255):
        raise TransportUrlError(url, f"interface {interface!r} is not a number 0-255")
    return UsbJigMatch(
        vendor_id=int(vendor, 16),
        product_id=int(product, 16),
        serial_number=options.get("serial"),
        path=path,
        interface=None if interface is None else int(interface),
    )


async def _open_serial(address: SerialAddress, **options: Any) -> Transport:
    from drivers.serial_port import open_serial

    return await open_serial(address.url, **options)


async def _open_tcp(address: TcpAddress, **options: Any) -> Transport:
    from drivers.tcp_transport import open_tcp

    return await open_tcp(address.host, address.port, **options)


async def _open_usb(address: UsbJigMatch, **options: Any) -> Transport:
    from drivers.usb_transport import open_usb

    return await open_usb(address, **options)


@dataclass(frozen=True)
class TransportKind:
    """One kind of transport: `parse` checks a URL of it and returns its address without opening anything; `open`
    opens an address with the caller's options. `options` lists the options it takes (None: it checks its own,
    as pyserial does), so one that does not apply is refused naming the URL rather than dropped."""

    name: str
    parse: Callable[[str], Any]
    open: Callable[..., Awaitable[Transport]]
    options: tuple[str, ...] | None = None


_SERIAL = TransportKind("serial", _parse_serial, _open_serial)
_TCP = TransportKind("TCP", _parse_tcp, _open_tcp, ("connect_timeout",))
_USB = TransportKind("USB", _parse_usb, _open_usb, ("backend", "read_size", "write_timeout_ms"))

# URL scheme -> kind; "" is a device path.
_SCHEMES: dict[str, TransportKind] = {
    "": _SERIAL,
    **dict.fromkeys(_PYSERIAL_SCHEMES, _SERIAL),
    "tcp": _TCP,
    "socket": _TCP,
    "usb": _USB,
}


def register_transport(scheme: str, kind: TransportKind) -> None:
    """Make `scheme://...` URLs open through `kind`."""
    _SCHEMES[scheme.lower()] = kind


def transport_schemes() -> tuple[str, ...]:
    """The URL schemes there are transports for ("" is not among them: a device path needs none)."""
    return tuple(sorted(scheme for scheme in _SCHEMES if scheme))


def _kind(url: str) -> TransportKind:
    if not url or url != url.strip():
        raise TransportUrlError(url, "empty, or leading or trailing whitespace")
    if "://" not in url:
        if url.startswith("/"):
            return _SCHEMES[""]
        raise TransportUrlError(
            url, "neither a device path (/dev/...) nor a URL (tcp://, usb://, rfc2217://, socket://, loop://)"
        )
    scheme = url.split("://", 1)[0].lower()
    kind = _SCHEMES.get(scheme) if scheme else None
    if kind is None:
        known = ", ".join(transport_schemes())
        raise TransportUrlError(url, f"unknown scheme {scheme!r} (known: {known}, or a device path)")
    return kind


def parse_transport_url(url: str) -> object:
    """Say what `url` names, without opening it (a `TransportAddress` for the built-in kinds, whatever its kind's
    parser returns for a registered one); raise `TransportUrlError` when it names nothing we can open."""
    address: object = _kind(url).parse(url)
    return address


async def open_transport(url: str, **options: Any) -> Transport:
    """Open the jig at `url`. `options` go to the transport that opens it:

    serial: `baudrate=` and pyserial's keyword arguments; tcp: `connect_timeout=`;
    usb: `backend=` (a pyusb backend, e.g. the simulator's), `read_size=`, `write_timeout_ms=`.
    """
    kind = _kind(url)
    address = kind.parse(url)
    if kind.options is not None:
        _check_options(url, kind.name, options, kind.options)
    return await kind.open(address, **options)


def _check_options(url: str, kind: str, options: dict[str, Any], accepted: tuple[str, ...]) -> None:
    # A baud rate handed to a TCP jig is a config mistake worth hearing about, not something to drop silently.
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(
            f"{url}: {', '.join(unknown)} do not apply to a {kind} transport (it takes {', '.join(accepted)})"
        )
