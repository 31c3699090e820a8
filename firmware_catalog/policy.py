"""The re-flash policy: may this hub be flashed, and to what? docs/policy.md states every rule and its source.

`decide` never raises for a refusal and has no override: there is no flag, option or environment variable that
turns a refusal into a flash. A decision to flash carries the image bytes that were checked, so what is sent to
the hub is exactly what passed (no re-read between check and use).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from firmware_catalog.catalog import Catalog, CatalogEntry, KeyStanding
from firmware_catalog.errors import ImageFormatError
from firmware_catalog.hexcode import format_hex
from firmware_catalog.hub import HubIdentity
from firmware_catalog.image import UpgradeImage, parse_image
from firmware_catalog.image_file import ImageFileRefused
from firmware_catalog.reason import ReasonCode

__all__ = ["Decision", "decide"]


@dataclass(frozen=True)
class Decision:
    """A verdict with its stable code. `entry` is the target (or the entry a refusal is about)."""

    code: ReasonCode
    message: str
    entry: CatalogEntry | None = None
    image: UpgradeImage | None = None
    catalog_serial: int | None = None

    @property
    def flash(self) -> bool:
        return self.code is ReasonCode.OK

    def describe(self) -> dict[str, Any]:
        return {
            "decision": "flash" if self.flash else ("none" if self.code is ReasonCode.ALREADY_CURRENT else "refuse"),
            "code": self.code.value,
            "message": self.message,
            "catalog_serial": self.catalog_serial,
            "target": None
            if self.entry is None
            else {
                "cpl_id": self.entry.cpl_id,
                "firmware_version": self.entry.firmware_version,
                "manufacturer_image_sha256": self.entry.manufacturer_image_sha256,
                "upgrade_image_sha256": self.entry.upgrade_image_sha256,
                "image": self.entry.image,
            },
        }


def _approval_refusal(entry: CatalogEntry, today: date) -> tuple[ReasonCode, str] | None:
    """Whether the CPL still approves the entry at all: withdrawn or uncertified firmware is no candidate."""
    if entry.status == "withdrawn":
        return ReasonCode.CPL_ENTRY_WITHDRAWN, f"{entry.cpl_id} ({entry.firmware_version}) is withdrawn"
    if entry.certificate_expiry < today:
        return (
            ReasonCode.CERTIFICATE_EXPIRED,
            f"{entry.cpl_id} ({entry.firmware_version}): CPA certificate expired {entry.certificate_expiry}",
        )
    return None


def _target_refusal(hub: HubIdentity, entry: CatalogEntry, today: date) -> tuple[ReasonCode, str] | None:
    """Whether an approved entry may be installed on this hub, before versions are compared."""
    if entry.installation_validity_end < today:
        return (
            ReasonCode.TARGET_PAST_IVP,
            f"{entry.cpl_id} ({entry.firmware_version}): installation validity ended {entry.installation_validity_end}",
        )
    low, high = entry.hardware_range
    if not low <= hub.hardware_int <= high:
        return (
            ReasonCode.HARDWARE_OUT_OF_RANGE,
            f"hub hardware {hub.hardware_version} is outside {entry.min_hardware_version}.."
            f"{entry.max_hardware_version} of {entry.cpl_id} ({entry.firmware_version})",
        )
    return None


def _header_mismatch(image: UpgradeImage, entry: CatalogEntry) -> str | None:
    pairs = (
        ("manufacturer", format_hex(image.manufacturer, 4), entry.manufacturer),
        ("image type", format_hex(image.image_type, 4), entry.model),
        ("file version", format_hex(image.file_version, 8), entry.firmware_version),
        ("minimum hardware version", format_hex(image.min_hardware_version, 4), entry.min_hardware_version),
        ("maximum hardware version", format_hex(image.max_hardware_version, 4), entry.max_hardware_version),
    )
    for name, in_image, in_entry in pairs:
        if in_image != in_entry:
            return f"image header {name} {in_image} differs from {entry.cpl_id}'s {in_entry}"
    return None


def _image_decision(hub: HubIdentity, entry: CatalogEntry, catalog: Catalog) -> Decision:
    serial = catalog.serial
    path = catalog.folder / entry.image

    def refuse(code: ReasonCode, message: str) -> Decision:
        return Decision(code, message, entry, None, serial)

    try:
        raw = catalog.image_bytes(entry)
    except ImageFileRefused as exc:
        return refuse(exc.code, exc.detail)
    try:
        image = parse_image(raw, source=path)
    except ImageFormatError as exc:
        return refuse(ReasonCode.MALFORMED_IMAGE, str(exc))
    if image.manufacturer_image_sha256 != entry.manufacturer_image_sha256:
        return refuse(
            ReasonCode.IMAGE_HASH_MISMATCH,
            f"{path}: Manufacturer Image SHA-256 {image.manufacturer_image_sha256} differs from "
            f"{entry.cpl_id}'s {entry.manufacturer_image_sha256}",
        )
    mismatch = _header_mismatch(image, entry)
    if mismatch:
        return refuse(ReasonCode.IMAGE_HEADER_MISMATCH, f"{path}: {mismatch}")
    standing, why = catalog.key_standing(entry.signed_by, hub.manufacturer)
    if standing is KeyStanding.REVOKED:
        return refuse(ReasonCode.KEY_REVOKED, f"{path}: {why}")
    if standing is KeyStanding.UNKNOWN:
        return refuse(ReasonCode.UNTRUSTED_KEY, f"{path}: {why}")
    assert entry.signed_by is not None
    if not catalog.signed_by(image, entry.signed_by):
        scope = catalog.key_scopes[entry.signed_by].value
        return refuse(ReasonCode.SIGNATURE_INVALID, f"{path}: signature does not verify under {why} (scope {scope})")
    # Last, so a changed file is first named by what the rules above find wrong with it. What reaches here is a
    # consistent, validly signed envelope that is still not the file the catalog approved (another header string,
    # control byte or signature over the same firmware); "signed by" in the audit must be about these bytes.
    if image.upgrade_image_sha256 != entry.upgrade_image_sha256:
        return refuse(
            ReasonCode.IMAGE_FILE_MISMATCH,
            f"{path}: Upgrade Image SHA-256 (the whole file) {image.upgrade_image_sha256} differs from "
            f"{entry.cpl_id}'s {entry.upgrade_image_sha256}",
        )
    return Decision(
        ReasonCode.OK,
        f"flash {hub.firmware_version} -> {entry.firmware_version} ({entry.cpl_id}, signed by {why})",
        entry,
        image,
        serial,
    )


def decide(hub: HubIdentity, catalog: Catalog, now: datetime) -> Decision:
    """Decide what to do with one hub. Rules apply in the order of docs/policy.md.

    The candidates are the entries for the hub's manufacturer and model that the CPL still approves (active, with
    a current certificate), newest first. The first candidate that may be installed on the hub and is a permitted
    step from its version is the target; that may be an intermediate version when the upgrade pathway (MP231)
    needs more than one step. Once a target is chosen its image must pass every image rule: a bad image is
    refused, never silently replaced by an older one. When no candidate fits, the refusal is the one about the
    newest candidate, the version the hub should have had.
    """
    serial = catalog.serial
    today = now.date()

    def refuse(code: ReasonCode, message: str, entry: CatalogEntry | None = None) -> Decision:
        return Decision(code, message, entry, catalog_serial=serial)

    if catalog.expired(now):
        return refuse(
            ReasonCode.CATALOG_EXPIRED, f"catalog serial {serial} expired at {catalog.document.expires_at.isoformat()}"
        )
    entries = catalog.entries_for(hub.manufacturer, hub.model)
    if not entries:
        return refuse(
            ReasonCode.UNKNOWN_MODEL, f"no catalog entry for manufacturer {hub.manufacturer} model {hub.model}"
        )
    candidates = [entry for entry in entries if _approval_refusal(entry, today) is None]
    if not candidates:
        refusal = _approval_refusal(entries[0], today)
        assert refusal is not None
        return refuse(*refusal, entries[0])
    if candidates[0].version_int < hub.firmware_int:
        return refuse(
            ReasonCode.DOWNGRADE_REFUSED,
            f"hub runs {hub.firmware_version}, newer than every approved entry (newest "
            f"{candidates[0].firmware_version}); a downgrade is never made",
            candidates[0],
        )
    first: Decision | None = None
    for entry in candidates:
        refusal = _target_refusal(hub, entry, today)
        if refusal is None:
            if entry.version_int == hub.firmware_int:
                return Decision(
                    ReasonCode.ALREADY_CURRENT,
                    f"hub already runs {entry.firmware_version} ({entry.cpl_id})",
                    entry,
                    catalog_serial=serial,
                )
            if entry.version_int < hub.firmware_int:
                refusal = (
                    ReasonCode.DOWNGRADE_REFUSED,
                    f"{entry.cpl_id} ({entry.firmware_version}) is older than the hub's {hub.firmware_version}",
                )
            elif hub.firmware_version not in entry.upgrade_from:
                refusal = (
                    ReasonCode.NOT_ON_UPGRADE_PATH,
                    f"{entry.cpl_id} ({entry.firmware_version}) may follow only "
                    f"{', '.join(entry.upgrade_from) or 'nothing'}, not {hub.firmware_version}",
                )
            else:
                return _image_decision(hub, entry, catalog)
        if first is None:
            first = refuse(refusal[0], refusal[1], entry)
    assert first is not None
    return first
