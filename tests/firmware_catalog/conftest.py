"""A small real world for catalog tests: key files, signed images and a catalog source on disk."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from firmware_catalog.catalog import Catalog, load_catalog
from firmware_catalog.catalog_source import BuildReport, build_catalog
from firmware_catalog.hub import HubIdentity
from firmware_catalog.image import build_signed_image
from firmware_catalog.keys import generate_key, write_keypair
from firmware_catalog.signature_scope import DEFAULT_SCOPE, SignatureScope

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def toml_value(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


@dataclass
class World:
    """Keys, images and a catalog source in a folder; `build()` signs a catalog from them."""

    root: Path
    authority: ec.EllipticCurvePrivateKey
    makers: dict[str, ec.EllipticCurvePrivateKey] = field(default_factory=dict)
    key_lines: list[str] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    serial: int = 1
    expires: datetime | None = None

    def key(self, name: str) -> ec.EllipticCurvePrivateKey:
        if name not in self.makers:
            (self.root / "keys").mkdir(exist_ok=True)
            self.makers[name] = generate_key()
            write_keypair(self.makers[name], self.root / "keys" / name)
        return self.makers[name]

    def trust(self, name: str, *manufacturers: str, scope: str | None = None) -> None:
        """List a trusted key; `scope` is written to the source only when given (None: the field left out)."""
        self.key(name)
        self.key_lines.append(
            f'[[keys]]\nid = "{name}"\npublic_key = "keys/{name}.pub"\nmanufacturers = {toml_value(manufacturers)}\n'
            + (f"scope = {toml_value(scope)}\n" if scope is not None else "")
        )

    def revoke(self, name: str, scope: str | None = None) -> None:
        self.key(name)
        self.key_lines.append(
            f'[[revoked_keys]]\nid = "{name}"\npublic_key = "keys/{name}.pub"\nreason = "compromised"\n'
            + (f"scope = {toml_value(scope)}\n" if scope is not None else "")
        )

    def image(
        self,
        *,
        version: str,
        manufacturer: str = "121D",
        model: str = "0000",
        min_hw: str = "1111",
        max_hw: str = "1211",
        signer: str = "maker",
        body: bytes | None = None,
        scope: SignatureScope = DEFAULT_SCOPE,
        **entry: Any,
    ) -> dict[str, Any]:
        """Make and sign an image and add its catalog entry; `entry` overrides entry fields."""
        body = body if body is not None else hashlib.sha256(version.encode()).digest() * 64
        data = build_signed_image(
            self.key(signer),
            manufacturer=int(manufacturer, 16),
            image_type=int(model, 16),
            file_version=int(version, 16),
            min_hardware_version=int(min_hw, 16),
            max_hardware_version=int(max_hw, 16),
            manufacturer_image=body,
            scope=scope,
        )
        name = f"images/{manufacturer}-{model}-{version}.bin"
        (self.root / "images").mkdir(exist_ok=True)
        (self.root / name).write_bytes(data)
        fields: dict[str, Any] = {
            "cpl_id": f"CPL-{manufacturer}-{model}-{version}",
            "manufacturer": manufacturer,
            "model": model,
            "firmware_version": version,
            "min_hardware_version": min_hw,
            "max_hardware_version": max_hw,
            "manufacturer_image_sha256": hashlib.sha256(body).hexdigest(),
            "chts_version": "V1.3",
            "installation_validity_end": date(2031, 12, 31),
            "maintenance_end": date(2034, 12, 31),
            "upgrade_from": [],
            "status": "active",
            "certificate_expiry": date(2030, 6, 30),
            "image": name,
        }
        fields.update(entry)
        self.entries.append(fields)
        return fields

    def source_text(self) -> str:
        expiry = f"expires = {toml_value(self.expires)}" if self.expires else "valid_days = 30"
        parts = [f"serial = {self.serial}\n{expiry}\n", *self.key_lines]
        for entry in self.entries:
            parts.append("[[entries]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in entry.items()))
        return "\n".join(parts)

    def write_source(self) -> Path:
        path = self.root / "source.toml"
        path.write_text(self.source_text())
        return path

    def build(self, out: str = "catalog", now: datetime = NOW) -> BuildReport:
        return build_catalog(self.write_source(), self.authority, self.root / out, now)

    def load(self, out: str = "catalog", now: datetime = NOW) -> Catalog:
        return load_catalog(self.root / out, self.authority.public_key(), now)


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(root=tmp_path, authority=generate_key())
    w.trust("maker", "121D")
    return w


@pytest.fixture
def hub() -> Callable[..., HubIdentity]:
    def make(**fields: str) -> HubIdentity:
        base = {"manufacturer": "121D", "model": "0000", "hardware_version": "1200", "firmware_version": "01000000"}
        return HubIdentity.model_validate(base | fields)

    return make


__all__ = ["NOW", "World", "timedelta"]
