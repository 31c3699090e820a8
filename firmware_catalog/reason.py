"""Stable reason codes: the words the audit trail, the DSP report and operators share.

A code, once published, keeps its name and meaning forever; new situations get new codes.
docs/policy.md lists every code with the rule behind it and its source; tests/firmware_catalog/test_docs.py
keeps that table and `RULES` identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["RULES", "PolicyEnd", "ReasonCode", "Rule", "policy_end"]


class ReasonCode(StrEnum):
    OK = "OK"
    ALREADY_CURRENT = "ALREADY_CURRENT"
    UNKNOWN_MODEL = "UNKNOWN_MODEL"
    NOT_ON_UPGRADE_PATH = "NOT_ON_UPGRADE_PATH"
    DOWNGRADE_REFUSED = "DOWNGRADE_REFUSED"
    HARDWARE_OUT_OF_RANGE = "HARDWARE_OUT_OF_RANGE"
    TARGET_PAST_IVP = "TARGET_PAST_IVP"
    CPL_ENTRY_WITHDRAWN = "CPL_ENTRY_WITHDRAWN"
    CERTIFICATE_EXPIRED = "CERTIFICATE_EXPIRED"
    IMAGE_MISSING = "IMAGE_MISSING"
    IMAGE_HASH_MISMATCH = "IMAGE_HASH_MISMATCH"
    IMAGE_HEADER_MISMATCH = "IMAGE_HEADER_MISMATCH"
    IMAGE_FILE_MISMATCH = "IMAGE_FILE_MISMATCH"
    MALFORMED_IMAGE = "MALFORMED_IMAGE"
    UNTRUSTED_KEY = "UNTRUSTED_KEY"
    KEY_REVOKED = "KEY_REVOKED"
    SIGNATURE_INVALID = "SIGNATURE_INVALID"
    CATALOG_SIGNATURE_INVALID = "CATALOG_SIGNATURE_INVALID"
    CATALOG_EXPIRED = "CATALOG_EXPIRED"
    CATALOG_ROLLBACK = "CATALOG_ROLLBACK"
    CATALOG_MALFORMED = "CATALOG_MALFORMED"


class PolicyEnd(StrEnum):
    """How a hub given a refusal code ends: the outcome a station records for it, or `held` when the fault is the
    catalog's, not the hub's (nothing is recorded as the hub's outcome; it waits for a good catalog). A station and
    every tool that flashes read it from here, so a refusal ends the same way wherever it is given."""

    FLASHED = "flashed"  # OK: the hub is flashed, and the flash decides its outcome
    HELD = "held"
    REFUSED = "REFUSED"
    SCRAP = "SCRAP"
    ALREADY_CURRENT = "ALREADY_CURRENT"


@dataclass(frozen=True)
class Rule:
    """One row of docs/policy.md: the code, when it is given, how the hub ends, and the public source of the rule."""

    code: ReasonCode
    when: str
    source: str
    ends: PolicyEnd = PolicyEnd.REFUSED


# Order is the order `decide` applies the rules in; docs/policy.md lists them in the same order.
RULES: tuple[Rule, ...] = (
    Rule(
        ReasonCode.CATALOG_SIGNATURE_INVALID,
        "The catalog's detached signature does not verify under the configured catalog authority key.",
        "SSC re-flash guidance (signed data only); CPL is the authority on approved firmware (SEC F2)",
        PolicyEnd.HELD,
    ),
    Rule(
        ReasonCode.CATALOG_MALFORMED,
        "The catalog's signature is good but its content breaks the schema.",
        "This station's catalog format (docs/catalog.md)",
        PolicyEnd.HELD,
    ),
    Rule(
        ReasonCode.CATALOG_ROLLBACK,
        "The catalog's serial is lower than the last serial this station accepted.",
        "SSC re-flash guidance (no replay of superseded approvals)",
        PolicyEnd.HELD,
    ),
    Rule(
        ReasonCode.CATALOG_EXPIRED,
        "The catalog's expiry time has passed (freeze): nothing is flashed until a fresh catalog arrives.",
        "SSC re-flash guidance (no replay of superseded approvals)",
        PolicyEnd.HELD,
    ),
    Rule(
        ReasonCode.UNKNOWN_MODEL,
        "No catalog entry has the hub's manufacturer and model (image type).",
        "SEC F2 Central Products List: only CPA-certified products",
    ),
    Rule(
        ReasonCode.CPL_ENTRY_WITHDRAWN,
        "No entry for the model is still approved, and the newest is withdrawn from the CPL.",
        "SEC F2 Central Products List",
    ),
    Rule(
        ReasonCode.CERTIFICATE_EXPIRED,
        "No entry for the model is still approved, and the newest's CPA certificate expired before today.",
        "SEC F2 CPA certification; MP209 (certificate renewal)",
    ),
    Rule(
        ReasonCode.TARGET_PAST_IVP,
        "Today is after the newest approved entry's installation validity end date: the hub cannot be installed.",
        "SEC Schedule 11 TSAT, Installation Validity Period",
        PolicyEnd.SCRAP,
    ),
    Rule(
        ReasonCode.HARDWARE_OUT_OF_RANGE,
        "The hub's hardware version is outside the newest approved entry's minimum..maximum range.",
        "GBCS firmware transfer (Hardware Version Mismatch); ZigBee OTA header hardware versions",
    ),
    Rule(
        ReasonCode.ALREADY_CURRENT,
        "The hub already runs the newest approved firmware that may be installed on it.",
        "MP155 (re-flash only hubs on older firmware)",
        PolicyEnd.ALREADY_CURRENT,
    ),
    Rule(
        ReasonCode.DOWNGRADE_REFUSED,
        "Every approved entry is older than the hub's firmware (4 octets compared as unsigned integers).",
        "SSC re-flash guidance (no downgrade)",
    ),
    Rule(
        ReasonCode.NOT_ON_UPGRADE_PATH,
        "The hub's firmware version is in no newer approved entry's upgrade pathway.",
        "MP231 Firmware upgrade pathways",
    ),
    Rule(
        ReasonCode.IMAGE_MISSING,
        "The chosen entry's image file is not a regular file inside the catalog folder: missing, a directory, a "
        "FIFO, a device or a socket, or a symlink that leads out of the folder (none of these is read).",
        "This station's catalog format (docs/catalog.md)",
    ),
    Rule(
        ReasonCode.MALFORMED_IMAGE,
        "The chosen image does not parse as a GBCS Upgrade Image, or the file is larger than the catalog's `size` "
        "for it (it is not read).",
        "GBCS Upgrade Image; ZigBee OTA Upgrade file header (doc 095264)",
    ),
    Rule(
        ReasonCode.IMAGE_HASH_MISMATCH,
        "The SHA-256 of the image's Manufacturer Image differs from the catalog's (CPL) hash.",
        "SEC F2 CPL (firmware hash); GBCS CS06 Manufacturer Image Hash",
    ),
    Rule(
        ReasonCode.IMAGE_HEADER_MISMATCH,
        "The image header's manufacturer, image type, version or hardware range differs from the entry.",
        "GBCS Upgrade Image; ZigBee OTA Upgrade file header (doc 095264)",
    ),
    Rule(
        ReasonCode.UNTRUSTED_KEY,
        "No trusted key for the hub's manufacturer signs the image.",
        "SSC re-flash guidance (signed images only); keys bound to manufacturers",
    ),
    Rule(
        ReasonCode.KEY_REVOKED,
        "The key that signs the image is revoked in the catalog.",
        "SSC re-flash guidance (signed images only)",
    ),
    Rule(
        ReasonCode.SIGNATURE_INVALID,
        "The image's signature does not verify under the key the catalog says signs it.",
        "SSC re-flash guidance (signed images only); GBCS ECDSA P-256",
    ),
    Rule(
        ReasonCode.IMAGE_FILE_MISMATCH,
        "The SHA-256 of the whole image file differs from the catalog's `upgrade_image_sha256`: another envelope "
        "of the same firmware (header string, control byte or signature), not the file the catalog approved.",
        "This station's catalog format (docs/catalog.md); GBCS Upgrade Image (the Manufacturer Image Hash does "
        "not cover the header, control byte or signature)",
    ),
    Rule(
        ReasonCode.OK,
        "Every rule passed: the decision carries the target entry and the verified image bytes.",
        "All of the above",
        PolicyEnd.FLASHED,
    ),
)

_ENDS = {rule.code: rule.ends for rule in RULES}


def policy_end(code: ReasonCode) -> PolicyEnd:
    """How a hub given `code` ends."""
    return _ENDS[code]
