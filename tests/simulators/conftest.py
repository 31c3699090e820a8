"""A signed image and a simulated hub that trusts its key, for every simulator and end-to-end test."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from drivers.maintenance_port import SessionSettings
from firmware_catalog.hub import HubIdentity
from firmware_catalog.image import UpgradeImage, build_signed_image, parse_image
from firmware_catalog.keys import generate_key
from firmware_catalog.signature_scope import DEFAULT_SCOPE, SignatureScope
from simulators.fault import parse_faults
from simulators.hub import HubOptions
from simulators.jig import SimJig
from simulators.link import LinkSettings

MANUFACTURER = 0x1072
MODEL = 0x0102
OLD_VERSION = "04000007"
TARGET_VERSION = 0x04010002

# Fast enough for quick tests, slow enough that the window and pacing matter.
FAST_LINK = LinkSettings(baud=4_000_000, latency_to_hub_s=0.001, latency_to_station_s=0.016)
QUICK = SessionSettings(reply_timeout_s=0.2, retries=3, activate_timeout_s=2.0, max_stalls=4)


@pytest.fixture(scope="session")
def key() -> ec.EllipticCurvePrivateKey:
    return generate_key()


def make_image(
    key: ec.EllipticCurvePrivateKey,
    body: bytes,
    version: int = TARGET_VERSION,
    scope: SignatureScope = DEFAULT_SCOPE,
) -> UpgradeImage:
    return parse_image(
        build_signed_image(
            key,
            manufacturer=MANUFACTURER,
            image_type=MODEL,
            file_version=version,
            min_hardware_version=0x0100,
            max_hardware_version=0x0200,
            manufacturer_image=body,
            header_string="sim test image",
            scope=scope,
        )
    )


@pytest.fixture(scope="session")
def image(key: ec.EllipticCurvePrivateKey) -> UpgradeImage:
    """96 KiB: half random, half text, so both DATA encodings are used."""
    return make_image(key, os.urandom(48 * 1024) + b"firmware text block " * 2458)


@pytest.fixture(scope="session")
def random_image(key: ec.EllipticCurvePrivateKey) -> UpgradeImage:
    """512 KiB that does not compress: every byte of it crosses the link."""
    return make_image(key, os.urandom(512 * 1024))


@pytest.fixture
def identity() -> HubIdentity:
    return HubIdentity(
        manufacturer=f"{MANUFACTURER:04X}",
        model=f"{MODEL:04X}",
        hardware_version="0110",
        firmware_version=OLD_VERSION,
        chf_id="00-DB-12-34-56-78-90-A0",
        gpf_id="00-DB-12-34-56-78-90-A1",
        han_variant="Single Band",
        chts_version="V1.3",
        serial="SIM0001",
    )


@pytest.fixture
def hub_options(tmp_path: Path, identity: HubIdentity, key: ec.EllipticCurvePrivateKey) -> Callable[..., HubOptions]:
    def build(fault: str = "", **overrides: object) -> HubOptions:
        options = HubOptions(
            identity=identity,
            state_dir=tmp_path / "hub",
            trusted_keys={MANUFACTURER: [key.public_key()]},
            faults=parse_faults(fault),
            reboot_delay_s=0.02,
        )
        return dataclasses.replace(options, **overrides)  # type: ignore[arg-type]

    return build


@pytest.fixture
async def make_jig(hub_options: Callable[..., HubOptions]) -> AsyncIterator[Callable[..., SimJig]]:
    jigs: list[SimJig] = []

    def build(
        fault: str = "", link: LinkSettings = FAST_LINK, settings: SessionSettings = QUICK, **kw: object
    ) -> SimJig:
        jig = SimJig(hub_options(fault, **kw), link, settings)
        jigs.append(jig)
        return jig

    yield build
    for jig in jigs:
        await jig.close()
