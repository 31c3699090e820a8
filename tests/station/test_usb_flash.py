"""A full flash over pyusb, through the simulated USB backend: two identical jigs, the right hub flashed."""

from __future__ import annotations

from pathlib import Path

from drivers.url_jig import UrlJig
from firmware_catalog.hub import HubIdentity
from firmware_catalog.image import build_signed_image, parse_image
from firmware_catalog.keys import generate_key
from simulators.hub import HubOptions
from simulators.hub_server import HubServer
from simulators.usb_backend import SimulatedUsbBackend, SimulatedUsbJig
from station.outcome import Outcome
from tests.flashing import flash_once


async def test_flash_through_pyusb_bulk_endpoints(tmp_path: Path) -> None:
    key = generate_key()
    image = parse_image(
        build_signed_image(
            key, manufacturer=0x121D, image_type=0, file_version=0x01020000, min_hardware_version=0x1111,
            max_hardware_version=0x1211, manufacturer_image=bytes(range(256)) * 600,
        )
    )  # fmt: skip

    def hub(n: int) -> HubServer:
        identity = HubIdentity(
            manufacturer="121D", model="0000", hardware_version="1200", firmware_version="01000000",
            chf_id=f"00-DB-12-34-00-00-00-0{n}", gpf_id=f"00-DB-12-34-00-00-01-0{n}",
        )  # fmt: skip
        return HubServer(HubOptions(identity, tmp_path / f"hub{n}", {0x121D: [key.public_key()]}))

    hubs = {"JIG-A": hub(1), "JIG-B": hub(2)}
    async with SimulatedUsbBackend() as backend:
        await backend.plug(SimulatedUsbJig("JIG-A", port_numbers=(2, 3)), hubs["JIG-A"].handle)
        await backend.plug(SimulatedUsbJig("JIG-B", port_numbers=(2, 4)), hubs["JIG-B"].handle)
        driver = UrlJig("usb://1209:0001?serial=JIG-B", backend=backend)
        try:
            identity = await driver.identify()
            assert identity.chf_id == "00-DB-12-34-00-00-00-02"  # the jig asked for, not its twin
            ending, _ = await flash_once(driver, image)
        finally:
            await driver.close()
    assert (ending.outcome, ending.firmware_after) == (Outcome.REFLASHED, "01020000")
    assert ending.hub_sha256 == image.manufacturer_image_sha256
    assert hubs["JIG-B"].hub.running_version == "01020000"
    assert hubs["JIG-A"].hub.running_version == "01000000"
