"""The catalog source: the readable TOML an authority edits, and `build_catalog`, which turns it into a signed
catalog folder after checking every image against its entry.

The built entry pins the whole image file the build checked (`upgrade_image_sha256`); the source does not carry that
hash, because the build reads the very file and no person should have to copy a second hash by hand.

The build refuses anything it can prove wrong (a missing or malformed image, a hash or header that differs from
its entry, a bad key file) with the source file, line and field. An image that no listed key signs is built with
`signed_by = null` and a warning: the policy then refuses it as UNTRUSTED_KEY on every hub, which is how a catalog
can show a refusal without hiding the image.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import AwareDatetime, Field, ValidationError, model_validator

from firmware_catalog.catalog import (
    CATALOG_FILE,
    SIGNATURE_FILE,
    CatalogDocument,
    CatalogEntry,
    EntryFields,
    RevokedKey,
    StrictModel,
    TrustedKey,
    format_validation_error,
)
from firmware_catalog.errors import CatalogError, CatalogFormatError, ImageFormatError, KeyFileError
from firmware_catalog.hexcode import format_hex
from firmware_catalog.hub import Hex4
from firmware_catalog.image import UpgradeImage, parse_image
from firmware_catalog.keys import fingerprint, load_public_key, public_key_pem, sign_raw
from firmware_catalog.signature_scope import DEFAULT_SCOPE, SignatureScope

__all__ = ["BuildReport", "CatalogSource", "build_catalog", "read_source"]


class SourceKey(StrictModel):
    id: str = Field(min_length=1)
    public_key: str
    manufacturers: tuple[Hex4, ...] = Field(min_length=1)
    scope: SignatureScope = DEFAULT_SCOPE


class SourceRevokedKey(StrictModel):
    id: str = Field(min_length=1)
    public_key: str
    reason: str = ""
    scope: SignatureScope = DEFAULT_SCOPE


class CatalogSource(StrictModel):
    serial: int = Field(ge=1)
    expires: AwareDatetime | None = None
    valid_days: int | None = Field(default=None, ge=1)
    keys: tuple[SourceKey, ...] = Field(min_length=1)
    revoked_keys: tuple[SourceRevokedKey, ...] = ()
    entries: tuple[EntryFields, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_expiry(self) -> CatalogSource:
        if (self.expires is None) == (self.valid_days is None):
            raise ValueError("give exactly one of 'expires' (a date-time with zone) or 'valid_days'")
        return self


def _locate(text: str, where: str) -> int | None:
    """Best-effort line number of a pydantic location like `entries[2].firmware_version` in TOML text."""
    match = re.fullmatch(r"(\w+)(?:\[(\d+)\])?(?:\.(\w+))?.*", where)
    if not match:
        return None
    table, index, key = match.group(1), match.group(2), match.group(3)
    lines = text.splitlines()
    if index is None:
        for number, line in enumerate(lines, 1):
            if line.lstrip().startswith("["):
                break
            if re.match(rf"\s*{re.escape(table)}\s*=", line):
                return number
        return None
    seen, start = -1, None
    for number, line in enumerate(lines, 1):
        if re.match(rf"\s*\[\[\s*{re.escape(table)}\s*\]\]", line):
            seen += 1
            if seen == int(index):
                start = number
                break
    if start is None or key is None:
        return start
    for number in range(start + 1, len(lines) + 1):
        line = lines[number - 1]
        if line.lstrip().startswith("["):
            break
        if re.match(rf"\s*{re.escape(key)}\s*=", line):
            return number
    return start


def read_source(path: str | Path) -> CatalogSource:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogFormatError(path, "", f"cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise CatalogFormatError(path, f"byte {exc.start}", "not UTF-8 text") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogFormatError(path, "", f"not valid TOML: {exc}") from exc
    try:
        return CatalogSource.model_validate(data)
    except ValidationError as exc:
        where, message = format_validation_error(exc)
        line = _locate(text, where)
        raise CatalogFormatError(path, f"line {line}: {where}" if line else where, message) from exc


@dataclass
class BuildReport:
    serial: int
    out: Path
    entries: int
    warnings: list[str] = field(default_factory=list)


def _image_name(entry: EntryFields) -> str:
    return f"images/{entry.manufacturer}-{entry.model}-{entry.firmware_version}.bin"


def _check_image(image: UpgradeImage, entry: EntryFields) -> str | None:
    if image.manufacturer_image_sha256 != entry.manufacturer_image_sha256:
        return (
            f"the image's Manufacturer Image SHA-256 is {image.manufacturer_image_sha256}, "
            f"the entry lists {entry.manufacturer_image_sha256}"
        )
    for label, in_image, in_entry in (
        ("manufacturer", format_hex(image.manufacturer, 4), entry.manufacturer),
        ("model (image type)", format_hex(image.image_type, 4), entry.model),
        ("firmware_version", format_hex(image.file_version, 8), entry.firmware_version),
        ("min_hardware_version", format_hex(image.min_hardware_version, 4), entry.min_hardware_version),
        ("max_hardware_version", format_hex(image.max_hardware_version, 4), entry.max_hardware_version),
    ):
        if in_image != in_entry:
            return f"the image header's {label} is {in_image}, the entry says {in_entry}"
    return None


def _write_folder(out: Path, document: bytes, signature: bytes, images: dict[str, bytes]) -> None:
    """Write the catalog beside `out` and swap it in, so a reader never sees half a catalog. A folder that holds
    anything a build does not write (notes, a key, a stray file beside a `catalog.json`) is never replaced."""
    foreign = _not_written_by_a_build(out)
    if foreign:
        raise CatalogError(
            f"{out}: holds {', '.join(foreign)}, which a catalog build does not write; refusing to replace it "
            "(choose another --out, or move those files)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.building-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "images").mkdir(parents=True)
    for name, data in images.items():
        (staging / name).write_bytes(data)
    (staging / SIGNATURE_FILE).write_bytes(signature)
    (staging / CATALOG_FILE).write_bytes(document)
    for path in [*staging.rglob("*"), staging]:
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    retired = out.parent / f".{out.name}.retired-{os.getpid()}"
    if out.exists():
        out.rename(retired)
    staging.rename(out)
    if retired.exists():
        shutil.rmtree(retired)


def _not_written_by_a_build(out: Path) -> list[str]:
    """What in `out` a build did not write: anything but catalog.json, catalog.sig and images/ holding files."""
    if not out.exists():
        return []
    if not out.is_dir():
        return [out.name]
    foreign = []
    for path in sorted(out.iterdir()):
        if path.name in (CATALOG_FILE, SIGNATURE_FILE) and path.is_file() and not path.is_symlink():
            continue
        if path.name == "images" and path.is_dir() and not path.is_symlink():
            foreign += [f"images/{p.name}" for p in sorted(path.iterdir()) if not p.is_file() or p.is_symlink()]
            continue
        foreign.append(path.name)
    return foreign


def build_catalog(
    source_path: str | Path,
    authority: ec.EllipticCurvePrivateKey,
    out: str | Path,
    now: datetime,
    base: str | Path | None = None,
) -> BuildReport:
    """Check a catalog source against its images and keys, then write the signed catalog folder `out`.

    Relative key and image paths resolve against `base` (default: the source file's folder).
    """
    source_path, out = Path(source_path), Path(out)
    source = read_source(source_path)
    root = Path(base) if base is not None else source_path.parent
    report = BuildReport(serial=source.serial, out=out, entries=len(source.entries))

    def fail(where: str, message: str) -> CatalogFormatError:
        return CatalogFormatError(source_path, where, message)

    def load_key(where: str, relative: str) -> ec.EllipticCurvePublicKey:
        try:
            return load_public_key(root / relative)
        except KeyFileError as exc:
            raise fail(where, str(exc)) from exc

    trusted: list[TrustedKey] = []
    # Every listed key by fingerprint, with its id and the scope its signatures cover.
    verifiers: dict[str, tuple[str, ec.EllipticCurvePublicKey, SignatureScope]] = {}
    for i, key in enumerate(source.keys):
        public = load_key(f"keys[{i}].public_key", key.public_key)
        fp = fingerprint(public)
        verifiers[fp] = (key.id, public, key.scope)
        trusted.append(
            TrustedKey(
                id=key.id,
                fingerprint=fp,
                public_key_pem=public_key_pem(public).decode(),
                manufacturers=key.manufacturers,
                scope=key.scope,
            )
        )
    revoked: list[RevokedKey] = []
    for i, rkey in enumerate(source.revoked_keys):
        public = load_key(f"revoked_keys[{i}].public_key", rkey.public_key)
        fp = fingerprint(public)
        verifiers[fp] = (rkey.id, public, rkey.scope)
        revoked.append(
            RevokedKey(
                id=rkey.id,
                fingerprint=fp,
                public_key_pem=public_key_pem(public).decode(),
                reason=rkey.reason,
                scope=rkey.scope,
            )
        )

    entries: list[CatalogEntry] = []
    images: dict[str, bytes] = {}
    for i, entry in enumerate(source.entries):
        where = f"entries[{i}] ({entry.cpl_id})"
        path = root / entry.image
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise fail(f"{where}.image", f"{path}: {exc.strerror}") from exc
        try:
            image = parse_image(raw, source=path)
        except ImageFormatError as exc:
            raise fail(f"{where}.image", str(exc)) from exc
        problem = _check_image(image, entry)
        if problem:
            raise fail(where, f"{path}: {problem}")
        signer = next((fp for fp, (_, key, scope) in verifiers.items() if image.verify(key, scope)), None)
        if signer is None:
            report.warnings.append(
                f"{entry.cpl_id}: {path} is signed by no listed key; it will be refused{_other_scope(image, verifiers)}"
            )
        name = _image_name(entry)
        if name in images:
            raise fail(where, f"{entry.manufacturer}/{entry.model}/{entry.firmware_version} is listed twice")
        images[name] = raw
        fields = entry.model_dump()
        fields.update(image=name, upgrade_image_sha256=image.upgrade_image_sha256, size=len(raw), signed_by=signer)
        entries.append(CatalogEntry(**fields))

    expires = source.expires if source.expires is not None else now + timedelta(days=source.valid_days or 0)
    document = CatalogDocument(
        format="reflash-catalog/2",
        serial=source.serial,
        issued_at=now,
        expires_at=expires,
        keys=tuple(trusted),
        revoked_keys=tuple(revoked),
        entries=tuple(entries),
    )
    payload: dict[str, Any] = document.model_dump(mode="json")
    for listed in (*payload["keys"], *payload["revoked_keys"]):
        # Written only when it says something: a catalog of default scopes loads in stations older than the field.
        if listed["scope"] == DEFAULT_SCOPE.value:
            del listed["scope"]
    encoded = (_canonical_json(payload) + "\n").encode()
    _write_folder(out, encoded, sign_raw(authority, encoded), images)
    return report


def _other_scope(
    image: UpgradeImage, verifiers: dict[str, tuple[str, ec.EllipticCurvePublicKey, SignatureScope]]
) -> str:
    """A hint for the authority when a listed key does sign the image, but over another scope than the source says."""
    for key_id, key, stated in verifiers.values():
        found = image.scopes_signed_by(key)
        if found:
            return f" (key {key_id} signs it over scope {found[0].value}, but the source gives {stated.value})"
    return ""


def _canonical_json(payload: dict[str, Any]) -> str:
    return json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False)
