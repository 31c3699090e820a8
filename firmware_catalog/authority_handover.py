"""The catalog authority handover: the old authority key's signature over the new one, carried in a catalog folder
as `authority-handover.json`, so that stations configured with the old key come to trust the new one.

    {"format": "reflash-authority-handover/1", "old_fingerprint": "..", "new_fingerprint": "..",
     "new_public_key_pem": "-----BEGIN PUBLIC KEY-----..", "signature": "<128 hex digits>"}

`signature` is raw r||s by the old key over `handover_message(old, new)`: canonical JSON naming both fingerprints
and what it is, so the signature can mean nothing else. The catalog beside it is signed by the new key alone. A
station whose authority in force is the old key reads the file only when `catalog.sig` does not verify under that
key, checks the signature under the key it already trusts (never a key from the file), and then verifies the catalog
under the new key; once it accepts that catalog it pins the new key (docs/catalog.md, "Rotating the authority").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, ValidationError

from firmware_catalog.errors import CatalogRefused, KeyFileError
from firmware_catalog.keys import fingerprint, public_key_from_pem, public_key_pem, verify_raw
from firmware_catalog.reason import ReasonCode
from firmware_catalog.signer import Signer

__all__ = [
    "HANDOVER_FILE",
    "AuthorityHandover",
    "check_handover_to",
    "handover_message",
    "make_handover",
    "read_handover",
]

HANDOVER_FILE = "authority-handover.json"
_MAX_SIZE = 16 * 1024  # a key and a signature: anything larger is not a handover, and is not read whole


class _HandoverFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["reflash-authority-handover/1"]
    old_fingerprint: str
    new_fingerprint: str
    new_public_key_pem: str
    signature: str


@dataclass(frozen=True)
class AuthorityHandover:
    """A verified handover: `old` (the key trusted before) vouches for `new`."""

    old: ec.EllipticCurvePublicKey
    new: ec.EllipticCurvePublicKey


def handover_message(old_fingerprint: str, new_fingerprint: str) -> bytes:
    statement = {"kind": "catalog-authority-handover", "old": old_fingerprint, "new": new_fingerprint}
    return json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()


def make_handover(old: Signer, new: ec.EllipticCurvePublicKey) -> bytes:
    """The handover file's bytes: `old` signs over `new` (run by the holders of the old authority key, once)."""
    old_fp, new_fp = fingerprint(old.public_key()), fingerprint(new)
    if old_fp == new_fp:
        raise KeyFileError("the new authority key is the old one; nothing to hand over")
    record = _HandoverFile(
        format="reflash-authority-handover/1",
        old_fingerprint=old_fp,
        new_fingerprint=new_fp,
        new_public_key_pem=public_key_pem(new).decode(),
        signature=old.sign(handover_message(old_fp, new_fp)).hex(),
    )
    return (record.model_dump_json(indent=2) + "\n").encode()


def check_handover_to(raw: bytes, new: ec.EllipticCurvePublicKey, where: str) -> None:
    """At build time: `raw` must be a handover to `new`, the key signing the catalog, or no station could use it.
    (Whether the old key signed it is for each station to check, under the key it trusts.)"""
    try:
        record = _HandoverFile.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise KeyFileError(f"{where}: not an authority handover: {exc.errors()[0]['msg']}") from exc
    if record.new_fingerprint != fingerprint(new):
        raise KeyFileError(
            f"{where}: hands over to {record.new_fingerprint[:16]}, but the catalog is signed by "
            f"{fingerprint(new)[:16]}; sign the catalog with the new authority key"
        )


def read_handover(folder: Path, trusted: ec.EllipticCurvePublicKey) -> AuthorityHandover | None:
    """The folder's handover from `trusted`, verified; None when the folder has none, or one from another key.
    Raises CatalogRefused (CATALOG_SIGNATURE_INVALID) for a handover from `trusted` that does not verify."""
    path = folder / HANDOVER_FILE
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_SIZE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CatalogRefused(ReasonCode.CATALOG_SIGNATURE_INVALID, f"{path}: cannot read: {exc.strerror}") from exc

    def refused(why: str) -> CatalogRefused:
        return CatalogRefused(ReasonCode.CATALOG_SIGNATURE_INVALID, f"{path}: {why}")

    if len(raw) > _MAX_SIZE:
        raise refused(f"larger than {_MAX_SIZE} bytes; not an authority handover")
    try:
        record = _HandoverFile.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise refused(f"not an authority handover: {exc.errors()[0]['msg']}") from exc
    if record.old_fingerprint != fingerprint(trusted):
        return None
    try:
        new = public_key_from_pem(record.new_public_key_pem.encode(), "new_public_key_pem")
    except KeyFileError as exc:
        raise refused(str(exc)) from exc
    if fingerprint(new) != record.new_fingerprint:
        raise refused("new_fingerprint does not match new_public_key_pem")
    try:
        signature = bytes.fromhex(record.signature)
    except ValueError:
        signature = b""
    if not verify_raw(trusted, handover_message(record.old_fingerprint, record.new_fingerprint), signature):
        raise refused("not signed by the catalog authority key in force")
    return AuthorityHandover(old=trusted, new=new)
