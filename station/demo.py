"""The demo's world: everything a newcomer needs, generated in a working folder.

Fresh keys (the catalog authority, two manufacturers, a rogue key, a revoked one, the station's), Upgrade Images
whose Manufacturer Images derive from a seed (so the committed catalog source can list their hashes), and the
example catalog from config/, built and signed. `station/showcase.py` runs the demo bench on it.
"""

from __future__ import annotations

import hashlib
import shutil
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from firmware_catalog.catalog_source import build_catalog, read_source
from firmware_catalog.hub import HubIdentity, format_eui64
from firmware_catalog.image import build_signed_image
from firmware_catalog.keys import generate_key, load_private_key, write_keypair

__all__ = ["CONFIG_DIR", "DemoHub", "DemoScenario", "DemoWorld", "build_demo_world", "device_id", "manufacturer_image"]

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
    name: str = "stock hub on 1.0"
    identity: HubIdentity
    fault: str = ""
    in_order: bool = True
    expect: tuple[str, str]
    after: str | None = None


class DemoScenario(BaseModel):
    model_config = ConfigDict(extra="forbid")
    catalog_source: str
    keys: list[str]
    images: list[DemoImage]
    hubs: list[DemoHub]
    filler: DemoHub

    @classmethod
    def load(cls, path: Path) -> DemoScenario:
        with path.open("rb") as handle:
            return cls.model_validate(tomllib.load(handle))

    def bench(self, slots: int | None) -> list[DemoHub]:
        """The scenario's hubs, cut to `slots` or filled up to it with stock hubs."""
        count = len(self.hubs) if slots is None else slots
        extra = [self.filler.model_copy(update={"name": f"stock hub {n}"}) for n in range(count - len(self.hubs))]
        return (self.hubs + extra)[:count]


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


def device_id(n: int, role: int) -> str:
    """Demo device IDs: CHF (role 1) and GPF (role 2) of hub n, in the DUIS form."""
    return format_eui64(0x00DB00DE00000000 | role << 40 | n)
