"""The demo: everything a newcomer needs to see the station decide, generated in a working folder.

It makes fresh keys (the catalog authority, two manufacturers, a rogue key and a revoked one), Upgrade Images
whose Manufacturer Images derive from a seed (so the committed catalog source can list their hashes), builds and
signs the example catalog from config/, loads it as the station would, and decides for every example hub,
comparing each decision with the code the scenario expects.
"""

from __future__ import annotations

import hashlib
import shutil
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from firmware_catalog.catalog import load_catalog
from firmware_catalog.catalog_source import build_catalog, read_source
from firmware_catalog.hub import HubIdentity
from firmware_catalog.image import build_signed_image
from firmware_catalog.keys import generate_key, load_private_key, load_public_key, write_keypair
from firmware_catalog.policy import Decision, decide
from firmware_catalog.reason import ReasonCode

__all__ = [
    "CONFIG_DIR",
    "DemoResult",
    "DemoScenario",
    "DemoWorld",
    "build_demo_world",
    "manufacturer_image",
    "run_catalog_demo",
]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
MARKER = ".reflash-demo"


class DemoImage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    signer: str
    size: int = Field(gt=0)
    header_string: str = ""


class DemoHub(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    identity: HubIdentity
    expect: ReasonCode


class DemoScenario(BaseModel):
    model_config = ConfigDict(extra="forbid")
    catalog_source: str
    keys: list[str]
    images: list[DemoImage]
    hubs: list[DemoHub]

    @classmethod
    def load(cls, path: Path) -> DemoScenario:
        with path.open("rb") as handle:
            return cls.model_validate(tomllib.load(handle))


@dataclass(frozen=True)
class DemoResult:
    hub: DemoHub
    decision: Decision

    @property
    def as_expected(self) -> bool:
        return self.decision.code is self.hub.expect

    def describe(self) -> dict[str, Any]:
        return {"name": self.hub.name, "expect": self.hub.expect.value, **self.decision.describe()}


def manufacturer_image(seed: str, size: int) -> bytes:
    """The demo's stand-in for a vendor's firmware body: deterministic, so its hash can be committed."""
    return hashlib.shake_256(seed.encode()).digest(size)


def _prepare(workdir: Path) -> None:
    if workdir.exists():
        if not (workdir / MARKER).exists() and any(workdir.iterdir()):
            raise FileExistsError(f"{workdir} exists and was not made by the demo; choose another --workdir")
        shutil.rmtree(workdir)
    (workdir / "keys").mkdir(parents=True)
    (workdir / "images").mkdir()
    (workdir / MARKER).write_text("made by `reflash demo`; deleted and remade on every run\n")


@dataclass(frozen=True)
class DemoWorld:
    """What the demo generated: keys, images and a signed catalog in `workdir`."""

    workdir: Path
    scenario: DemoScenario
    catalog_dir: Path

    def key(self, name: str) -> Path:
        return self.workdir / "keys" / name

    @property
    def authority_pub(self) -> Path:
        return self.key("authority.pub")


def build_demo_world(workdir: Path, config_dir: Path = CONFIG_DIR) -> DemoWorld:
    """Generate keys and images, and build and sign the example catalog, in `workdir` (made afresh)."""
    scenario = DemoScenario.load(config_dir / "demo.toml")
    source_path = config_dir / scenario.catalog_source
    source = read_source(source_path)
    _prepare(workdir)
    for name in scenario.keys:
        write_keypair(generate_key(), workdir / "keys" / name)
    entries = {entry.image: entry for entry in source.entries}
    for spec in scenario.images:
        entry = entries[spec.path]
        data = build_signed_image(
            load_private_key(workdir / "keys" / f"{spec.signer}.key"),
            manufacturer=int(entry.manufacturer, 16),
            image_type=int(entry.model, 16),
            file_version=int(entry.firmware_version, 16),
            min_hardware_version=int(entry.min_hardware_version, 16),
            max_hardware_version=int(entry.max_hardware_version, 16),
            manufacturer_image=manufacturer_image(spec.path, spec.size),
            header_string=spec.header_string,
        )
        (workdir / spec.path).write_bytes(data)
    catalog_dir = workdir / "catalog"
    authority = load_private_key(workdir / "keys" / "authority.key")
    build_catalog(source_path, authority, catalog_dir, datetime.now(UTC), base=workdir)
    return DemoWorld(workdir, scenario, catalog_dir)


def run_catalog_demo(workdir: Path, config_dir: Path = CONFIG_DIR) -> list[DemoResult]:
    """Build the demo world, load the catalog as the station would, and decide for every example hub."""
    world = build_demo_world(workdir, config_dir)
    now = datetime.now(UTC)
    catalog = load_catalog(world.catalog_dir, load_public_key(world.authority_pub), now)
    return [DemoResult(hub, decide(hub.identity, catalog, now)) for hub in world.scenario.hubs]
