"""Transport URLs: what each form names, and errors that say what is wrong."""

from __future__ import annotations

import pytest

from drivers.transport_url import SerialAddress, TcpAddress, TransportUrlError, open_transport, parse_transport_url
from drivers.usb_transport import UsbJigMatch


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("/dev/ttyUSB0", SerialAddress("/dev/ttyUSB0")),
        ("rfc2217://jig-7.lab:4000", SerialAddress("rfc2217://jig-7.lab:4000")),
        ("loop://", SerialAddress("loop://")),
        ("tcp://10.0.0.7:4001", TcpAddress("10.0.0.7", 4001)),
        ("socket://jig-7.lab:4001", TcpAddress("jig-7.lab", 4001)),
        ("tcp://[::1]:4001", TcpAddress("::1", 4001)),
        ("usb://1209:0001", UsbJigMatch(0x1209, 0x0001)),
        ("usb://1209:00aF?serial=JIG%26A", UsbJigMatch(0x1209, 0x00AF, serial_number="JIG&A")),
        ("usb://1209:0001?path=1-2.3&interface=1", UsbJigMatch(0x1209, 0x0001, path="1-2.3", interface=1)),
    ],
)
def test_forms(url: str, address: object) -> None:
    assert parse_transport_url(url) == address


def test_usb_match_prints_as_its_url() -> None:
    assert str(parse_transport_url("usb://1209:0001?path=1-2.3&serial=A")) == "usb://1209:0001?serial=A&path=1-2.3"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "empty"),
        (" /dev/ttyUSB0", "whitespace"),
        ("ttyUSB0", "neither a device path"),
        ("usb:1209:0001", "neither a device path"),
        ("ftp://host/", "unknown scheme 'ftp'"),
        ("tcp://host", "no port"),
        ("tcp://:4001", "no host"),
        ("tcp://host:99999", "bad host or port"),
        ("tcp://host:4001/jig", "unexpected path"),
        ("usb://12G9:0001", "vendor ID '12G9' is not 4 hex digits"),
        ("usb://1209", "product ID '' is not 4 hex digits"),
        ("usb://1209:0001?sn=A", "unknown option 'sn'"),
        ("usb://1209:0001?serial=A&serial=B", "given twice"),
        ("usb://1209:0001?serial=", "'serial' is empty"),
        ("usb://1209:0001?path=2.3", "path '2.3' is not BUS-PORT"),
        ("usb://1209:0001?interface=x", "interface 'x' is not a number"),
        ("usb://1209:0001?serial", "not key=value"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(TransportUrlError, match=problem) as caught:
        parse_transport_url(url)
    assert repr(url) in str(caught.value)


async def test_open_refuses_a_bad_url_before_touching_anything() -> None:
    with pytest.raises(TransportUrlError, match="unknown scheme"):
        await open_transport("serial:///dev/ttyUSB0")


async def test_missing_serial_device_names_the_path() -> None:
    with pytest.raises(OSError, match="/dev/does-not-exist"):
        await open_transport("/dev/does-not-exist")


async def test_options_that_do_not_apply_are_refused_by_name() -> None:
    with pytest.raises(TypeError, match=r"tcp://127.0.0.1:9: baudrate do not apply to a TCP transport"):
        await open_transport("tcp://127.0.0.1:9", baudrate=921600)
    with pytest.raises(TypeError, match=r"baudrate do not apply to a USB transport"):
        await open_transport("usb://1209:0001", baudrate=921600)


async def test_a_transport_registered_for_a_scheme_is_parsed_and_opened_through_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import drivers.transport_url as transport_url
    from drivers.transport import Transport
    from simulators.link import Link, LinkSettings

    links: list[Link] = []

    async def open_bay(address: str, **options: object) -> Transport:
        links.append(Link(LinkSettings()))
        return links[-1].station

    monkeypatch.setattr(transport_url, "_SCHEMES", dict(transport_url._SCHEMES))  # registered for this test only
    with pytest.raises(TransportUrlError, match="unknown scheme 'bay'"):
        parse_transport_url("bay://7")
    transport_url.register_transport("bay", transport_url.TransportKind("bay", lambda url: url[6:], open_bay, ("x",)))
    assert "bay" in transport_url.transport_schemes()
    assert parse_transport_url("bay://7") == "7"
    transport = await open_transport("bay://7", x=1)
    assert transport is links[0].station
    with pytest.raises(TypeError, match=r"bay://7: y do not apply to a bay transport \(it takes x\)"):
        await open_transport("bay://7", y=1)
    links[0].cut()
