"""The approved-firmware catalog: what the CPL and the Firmware Information Repository allow, signed.

A built catalog is a folder:

    catalog.json   the document (schema `CatalogDocument`, docs/catalog.md)
    catalog.sig    64 bytes, raw ECDSA P-256 r||s over SHA-256 of catalog.json exactly as stored
    images/        the Upgrade Images the entries name

`load_catalog` trusts nothing in the folder until the signature verifies under the authority key the station is
configured with; `CatalogHolder` keeps the last good catalog when a newer offer is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from firmware_catalog.errors import (
    CatalogError,
    CatalogFormatError,
    CatalogRefused,
    KeyFileError,
    format_validation_error,
)
from firmware_catalog.hub import Hex4, Hex8
from firmware_catalog.image_file import read_catalog_image
from firmware_catalog.keys import fingerprint, public_key_from_pem, verify_raw
from firmware_catalog.reason import ReasonCode
from firmware_catalog.signature_scope import DEFAULT_SCOPE, SignatureScope

if TYPE_CHECKING:
    from firmware_catalog.image import UpgradeImage

__all__ = [
    "CATALOG_FILE",
    "SIGNATURE_FILE",
    "Catalog",
    "CatalogDocument",
    "CatalogEntry",
    "CatalogHolder",
    "CatalogPin",
    "EntryFields",
    "KeyStanding",
    "RevokedKey",
    "Sha256Hex",
    "StrictModel",
    "TrustedKey",
    "format_validation_error",
    "load_catalog",
]

CATALOG_FILE = "catalog.json"
SIGNATURE_FILE = "catalog.sig"


def _sha256_hex(value: str) -> str:
    if len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise ValueError(f"must be 64 hex digits (a SHA-256), got {value!r}")
    return value.lower()


def _relative_posix(value: str) -> str:
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"must be a relative path inside the catalog folder, got {value!r}")
    return value


Sha256Hex = Annotated[str, AfterValidator(_sha256_hex)]
RelativePath = Annotated[str, AfterValidator(_relative_posix)]


class StrictModel(BaseModel):
    """Catalog schemas refuse unknown fields and are immutable once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class EntryFields(StrictModel):
    """The fields a CPL entry carries, shared by the catalog source and the built catalog."""

    cpl_id: str = Field(min_length=1)
    manufacturer: Hex4
    model: Hex4
    firmware_version: Hex8
    min_hardware_version: Hex4
    max_hardware_version: Hex4
    manufacturer_image_sha256: Sha256Hex
    chts_version: str = Field(min_length=1)
    installation_validity_end: date
    maintenance_end: date
    upgrade_from: tuple[Hex8, ...]
    status: Literal["active", "withdrawn"]
    certificate_expiry: date
    image: RelativePath

    @property
    def version_int(self) -> int:
        return int(self.firmware_version, 16)

    @property
    def hardware_range(self) -> tuple[int, int]:
        return int(self.min_hardware_version, 16), int(self.max_hardware_version, 16)


class CatalogEntry(EntryFields):
    """An entry of the built catalog: the source's fields plus what the build learned from the image file."""

    # SHA-256 of the whole Upgrade Image file the build checked (header, Manufacturer Image, control byte and
    # signature). The Manufacturer Image Hash alone leaves the header string, the control byte and the signature
    # free: another envelope of the same firmware would pass it. The build computes this; no one types it.
    upgrade_image_sha256: Sha256Hex
    # Length in bytes of that file. A station reads no more than this from the folder (firmware_catalog/image_file.py):
    # a file that has grown, or a device or FIFO put in its place, is refused without being read.
    size: int = Field(ge=1)
    # Fingerprint of the catalog key (trusted or revoked) whose signature the image carries, found at build time;
    # None when no key in the catalog signs it. The policy verifies the signature again on every decision.
    signed_by: Sha256Hex | None


class TrustedKey(StrictModel):
    id: str = Field(min_length=1)
    fingerprint: Sha256Hex
    public_key_pem: str
    manufacturers: tuple[Hex4, ...] = Field(min_length=1)
    # Which bytes this manufacturer's signatures cover; a catalog built before the field existed means the default.
    scope: SignatureScope = DEFAULT_SCOPE


class RevokedKey(StrictModel):
    id: str = Field(min_length=1)
    fingerprint: Sha256Hex
    # Kept so that an image signed by a revoked key is recognised as such (KEY_REVOKED), not merely unknown.
    public_key_pem: str
    reason: str = ""
    # Needed for the same recognition: a signature is checked over the bytes its key signs.
    scope: SignatureScope = DEFAULT_SCOPE


# Formats this code once wrote and no longer loads, with why: the message tells the operator what to do.
_RETIRED_FORMATS = {
    "reflash-catalog/1": "it pins only the Manufacturer Image hash, not the whole Upgrade Image file",
}


class CatalogDocument(StrictModel):
    format: Literal["reflash-catalog/2"]
    serial: int = Field(ge=1)
    issued_at: AwareDatetime
    expires_at: AwareDatetime
    keys: tuple[TrustedKey, ...]
    revoked_keys: tuple[RevokedKey, ...] = ()
    entries: tuple[CatalogEntry, ...]


class KeyStanding(Enum):
    TRUSTED = "trusted"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class CatalogPin:
    """What the station remembers of the last catalog it accepted, to refuse rollbacks across restarts."""

    serial: int
    digest: str


@dataclass(frozen=True)
class Catalog:
    """A catalog whose signature verified; its document is immutable."""

    folder: Path
    document: CatalogDocument
    digest: str
    # Every key the catalog lists, trusted or revoked, by fingerprint; `key_standing` says which may sign what.
    public_keys: dict[str, ec.EllipticCurvePublicKey]
    # The signature scope of each of those keys, by fingerprint.
    key_scopes: dict[str, SignatureScope]

    @property
    def serial(self) -> int:
        return self.document.serial

    @property
    def pin(self) -> CatalogPin:
        return CatalogPin(self.serial, self.digest)

    def expired(self, now: datetime) -> bool:
        return now >= self.document.expires_at

    def entries_for(self, manufacturer: str, model: str) -> list[CatalogEntry]:
        """Entries for one hub type, newest firmware first."""
        found = [e for e in self.document.entries if e.manufacturer == manufacturer and e.model == model]
        return sorted(found, key=lambda e: e.version_int, reverse=True)

    def image_bytes(self, entry: CatalogEntry) -> bytes:
        """The bytes of an entry's image file, read safely and boundedly; raises ImageFileRefused with a reason code."""
        return read_catalog_image(self.folder, entry.image, entry.size)

    def signed_by(self, image: UpgradeImage, key_fingerprint: str) -> bool:
        """Whether the listed key `key_fingerprint` signed `image`, over the scope the catalog states for that key."""
        return image.verify(self.public_keys[key_fingerprint], self.key_scopes[key_fingerprint])

    def key_standing(self, key_fingerprint: str | None, manufacturer: str) -> tuple[KeyStanding, str]:
        """Whether a key may sign for `manufacturer`, with a sentence saying why not."""
        if key_fingerprint is None:
            return KeyStanding.UNKNOWN, "the image is signed by no key this catalog knows"
        for revoked in self.document.revoked_keys:
            if revoked.fingerprint == key_fingerprint:
                return KeyStanding.REVOKED, f"key {revoked.id} is revoked: {revoked.reason or 'no reason given'}"
        for key in self.document.keys:
            if key.fingerprint == key_fingerprint:
                if manufacturer in key.manufacturers:
                    return KeyStanding.TRUSTED, f"key {key.id}"
                return (
                    KeyStanding.UNKNOWN,
                    f"key {key.id} is trusted for {', '.join(key.manufacturers)}, not for {manufacturer}",
                )
        return KeyStanding.UNKNOWN, f"key {key_fingerprint[:16]} is not in this catalog"


class _JsonObject(dict[str, Any]):
    """A JSON object as read, remembering the keys it was given more than once (json keeps only the last)."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.repeated: list[str] = []
        for key, value in pairs:
            if key in self and key not in self.repeated:
                self.repeated.append(key)
            self[key] = value


def _repeated_key(value: Any, where: str = "") -> str | None:
    """Where the first key given twice is, like `entries[0].status`, or None."""
    if isinstance(value, _JsonObject):
        if value.repeated:
            return f"{where}.{value.repeated[0]}" if where else value.repeated[0]
        for key, item in value.items():
            found = _repeated_key(item, f"{where}.{key}" if where else key)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _repeated_key(item, f"{where}[{index}]")
            if found:
                return found
    return None


def _parse_document(raw: bytes, source: Path) -> CatalogDocument:
    """The signed bytes as a document, strictly: one value per key, JSON types exactly as the schema says.

    Lax parsing would let the signed bytes say one thing and the loaded catalog another (a repeated key read as its
    last value, `true` read as 1, `"7"` as 7); a reviewer reading catalog.json must see what the station loads.
    """
    try:
        data = json.loads(raw, object_pairs_hook=_JsonObject)
    except json.JSONDecodeError as exc:
        raise CatalogFormatError(source, f"line {exc.lineno} column {exc.colno}", exc.msg) from exc
    except UnicodeDecodeError as exc:
        raise CatalogFormatError(source, f"byte {exc.start}", "not UTF-8 text") from exc
    except (ValueError, RecursionError) as exc:
        raise CatalogFormatError(source, "", f"not valid JSON: {exc}") from exc
    repeated = _repeated_key(data)
    if repeated is not None:
        raise CatalogFormatError(source, repeated, "key given more than once; a catalog gives each key once")
    if isinstance(data, dict) and isinstance(data.get("format"), str) and data["format"] in _RETIRED_FORMATS:
        (current,) = get_args(CatalogDocument.model_fields["format"].annotation)
        raise CatalogFormatError(
            source,
            "format",
            f"{data['format']} is no longer loaded: {_RETIRED_FORMATS[data['format']]}. Rebuild the catalog from "
            f"its source with `reflash catalog build` to get {current}, with a higher serial (a station that "
            f"accepted this one refuses its serial with other content)",
        )
    try:
        # JSON mode keeps dates and date-times given as strings; strict refuses every other type conversion.
        return CatalogDocument.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        where, message = format_validation_error(exc)
        raise CatalogFormatError(source, where, message) from exc


def _check_consistency(document: CatalogDocument, source: Path) -> dict[str, ec.EllipticCurvePublicKey]:
    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    listed: list[tuple[str, TrustedKey | RevokedKey]] = [(f"keys[{i}]", k) for i, k in enumerate(document.keys)]
    listed += [(f"revoked_keys[{i}]", k) for i, k in enumerate(document.revoked_keys)]
    for where, key in listed:
        if not key.public_key_pem.isascii():
            raise CatalogFormatError(source, f"{where}.public_key_pem", "a PEM key is ASCII text")
        try:
            public = public_key_from_pem(key.public_key_pem.encode(), "the key")
        except KeyFileError as exc:
            raise CatalogFormatError(source, f"{where}.public_key_pem", str(exc)) from exc
        if fingerprint(public) != key.fingerprint:
            raise CatalogFormatError(source, f"{where}.fingerprint", "does not match the key's public_key_pem")
        keys[key.fingerprint] = public
    known = set(keys)
    seen: dict[tuple[str, str, str], str] = {}
    for i, entry in enumerate(document.entries):
        ident = (entry.manufacturer, entry.model, entry.firmware_version)
        if ident in seen:
            raise CatalogFormatError(source, f"entries[{i}]", f"{'/'.join(ident)} is listed twice (also {seen[ident]})")
        seen[ident] = entry.cpl_id
        if entry.signed_by is not None and entry.signed_by not in known:
            raise CatalogFormatError(source, f"entries[{i}].signed_by", "names a key the catalog does not list")
    return keys


def load_catalog(
    folder: str | Path,
    authority: ec.EllipticCurvePublicKey,
    now: datetime,
    pin: CatalogPin | None = None,
) -> Catalog:
    """Load and check a built catalog. Raises CatalogRefused (with its reason code) or CatalogFormatError."""
    folder = Path(folder)
    doc_path, sig_path = folder / CATALOG_FILE, folder / SIGNATURE_FILE
    try:
        raw = doc_path.read_bytes()
    except OSError as exc:
        raise CatalogFormatError(doc_path, "", f"cannot read: {exc.strerror}") from exc
    try:
        signature = sig_path.read_bytes()
    except OSError as exc:
        raise CatalogRefused(
            ReasonCode.CATALOG_SIGNATURE_INVALID, f"{sig_path}: cannot read the signature: {exc.strerror}"
        ) from exc
    if not verify_raw(authority, raw, signature):
        raise CatalogRefused(
            ReasonCode.CATALOG_SIGNATURE_INVALID,
            f"{sig_path} does not verify {doc_path} under the configured catalog authority key",
        )
    document = _parse_document(raw, doc_path)
    keys = _check_consistency(document, doc_path)
    digest = hashlib.sha256(raw).hexdigest()
    if pin is not None:
        if document.serial < pin.serial:
            raise CatalogRefused(
                ReasonCode.CATALOG_ROLLBACK,
                f"serial {document.serial} is older than serial {pin.serial}, already accepted",
            )
        if document.serial == pin.serial and digest != pin.digest:
            raise CatalogRefused(
                ReasonCode.CATALOG_ROLLBACK,
                f"serial {document.serial} was already accepted with different content",
            )
    if now >= document.expires_at:
        raise CatalogRefused(
            ReasonCode.CATALOG_EXPIRED, f"serial {document.serial} expired at {document.expires_at.isoformat()}"
        )
    listed: list[TrustedKey | RevokedKey] = [*document.keys, *document.revoked_keys]
    scopes = {key.fingerprint: key.scope for key in listed}
    return Catalog(folder=folder, document=document, digest=digest, public_keys=keys, key_scopes=scopes)


@dataclass(frozen=True)
class Offer:
    """The result of offering a catalog to the holder: accepted, or refused with a code (the old one stays)."""

    accepted: bool
    code: ReasonCode
    message: str
    serial: int | None


class CatalogHolder:
    """Holds the catalog in force. A refused offer never replaces it: the station keeps the last good one."""

    def __init__(self, authority: ec.EllipticCurvePublicKey, pin: CatalogPin | None = None) -> None:
        self._authority = authority
        self._pin = pin
        self.current: Catalog | None = None

    @property
    def pin(self) -> CatalogPin | None:
        return self._pin

    def offer(self, folder: str | Path, now: datetime) -> Offer:
        try:
            catalog = load_catalog(folder, self._authority, now, self._pin)
        except CatalogRefused as exc:
            return Offer(False, exc.code, str(exc), None)
        except CatalogError as exc:
            return Offer(False, ReasonCode.CATALOG_MALFORMED, str(exc), None)
        self.current = catalog
        self._pin = catalog.pin
        return Offer(True, ReasonCode.OK, f"catalog serial {catalog.serial} accepted", catalog.serial)
