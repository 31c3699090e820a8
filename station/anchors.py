"""The audit chain's anchors: the station's signed checkpoints as the DSP holds them, read from what a DSP bridge
exports (a file, or an http(s) URL that serves the same document), and the station's own chain checked against them.

A checkpoint kept only in the station's database pins the chain against edits, but not against someone who can
rewrite the database: they can cut the tail, sign afresh or start a new database. An anchor is a checkpoint the
station published (contract 1.2, AuditCheckpoint) and the DSP stored where the station cannot reach. Checked here:

- every anchor is signed by a key the station knows (a different key: the key, or the whole database, was replaced);
- the local chain reaches every anchor (it ends before one: its tail was cut);
- the local entry at each anchor's sequence number has the anchor's hash (it does not: history was rewritten, or the
  database replaced by another whose chain does not contain the anchors).

What these checks cannot catch, and why, is docs/station.md's threat model ("What root on the station can hide").
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from firmware_catalog.keys import verify_raw
from station.audit import AuditEntry, Checkpoint, checkpoint_message
from station.messages import AuditCheckpoint

__all__ = [
    "ANCHORS_FORMAT",
    "AnchorReport",
    "AnchorsError",
    "AnchorsUnreachable",
    "Finding",
    "check_anchors",
    "load_anchors",
]

# The document a DSP bridge exports and serves: {"format", "bridge", "exported_at", "anchors": [AuditCheckpoint
# payloads, each with "received_at"]} (docs/mqtt-api.md, The bridge).
ANCHORS_FORMAT = "reflash.anchors/1"


class AnchorsError(Exception):
    """The anchors named cannot be used (not there, not JSON, not an anchors document); the message says where."""


class AnchorsUnreachable(AnchorsError):
    """The URL named does not answer: the world refusing, not the input being wrong."""


def load_anchors(where: str, *, timeout_s: float = 15.0) -> dict[str, list[Checkpoint]]:
    """Every anchor in the document at `where` (a path, or an http:// or https:// URL), by station."""
    text = _fetch(where, timeout_s) if where.startswith(("http://", "https://")) else _read(where)
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnchorsError(f"{where}: not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != ANCHORS_FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise AnchorsError(f"{where}: not an anchors document (format {found!r}, expected {ANCHORS_FORMAT!r})")
    items = document.get("anchors")
    if not isinstance(items, list):
        raise AnchorsError(f"{where}: `anchors` is not a list")
    by_station: dict[str, list[Checkpoint]] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise AnchorsError(f"{where}: anchors[{index}] is not an object")
        message = {key: value for key, value in item.items() if key != "received_at"}
        try:
            anchor = AuditCheckpoint.model_validate(message)
        except ValidationError as exc:
            first = exc.errors()[0]
            at = ".".join(str(part) for part in first["loc"]) or "(anchor)"
            raise AnchorsError(f"{where}: anchors[{index}].{at}: {first['msg']}") from None
        by_station.setdefault(anchor.station, []).append(
            Checkpoint(anchor.seq, anchor.hash, anchor.at, anchor.station, anchor.key_fingerprint,
                       bytes.fromhex(anchor.signature))
        )  # fmt: skip
    return by_station


def _read(where: str) -> bytes:
    try:
        return Path(where).read_bytes()
    except OSError as exc:
        raise AnchorsError(f"{where}: cannot read: {exc.strerror or exc}") from None


def _fetch(where: str, timeout_s: float) -> bytes:
    try:
        with urllib.request.urlopen(where, timeout=timeout_s) as response:  # noqa: S310 -- http(s) only, checked
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response open
        raise AnchorsError(f"{where}: the server answered {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise AnchorsUnreachable(f"{where}: no answer: {exc.reason}") from None
    except (TimeoutError, ConnectionError) as exc:
        raise AnchorsUnreachable(f"{where}: no answer: {exc}") from None


@dataclass(frozen=True)
class Finding:
    seq: int
    problem: str


@dataclass
class AnchorReport:
    """How the local chain stands against the DSP's anchors of one station."""

    station: str
    anchors: int
    local_last_seq: int
    anchored_to: int | None  # the highest sequence number an anchor that agrees with the local chain covers
    signatures_checked: bool
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.anchors > 0 and not self.findings

    @property
    def unanchored(self) -> int:
        """Local entries after the last anchor that agrees: these could be cut without the DSP seeing it."""
        return self.local_last_seq - (self.anchored_to or 0)

    def describe(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "station": self.station,
            "anchors": self.anchors,
            "local_last_seq": self.local_last_seq,
            "anchored_to": self.anchored_to,
            "unanchored_entries": self.unanchored,
            "signatures_checked": self.signatures_checked,
            "first_bad_seq": self.findings[0].seq if self.findings else None,
            "findings": [{"seq": f.seq, "problem": f.problem} for f in self.findings],
        }


def check_anchors(
    station: str,
    entries: Iterable[AuditEntry],
    anchors: Iterable[Checkpoint],
    keys: Mapping[str, ec.EllipticCurvePublicKey],
) -> AnchorReport:
    """Check the local chain against the DSP's anchors of `station`; `keys` are the station's public keys by
    fingerprint (none: signatures are not checked, hashes still are). Findings are in sequence order."""
    hashes = {entry.seq: entry.hash for entry in entries}
    last = max(hashes, default=0)
    mine = sorted((a for a in anchors if a.station == station), key=lambda a: (a.seq, a.at))
    report = AnchorReport(station, len(mine), last, None, bool(keys))
    for anchor in mine:
        problem = _problem(anchor, hashes, last, keys)
        if problem is None:
            report.anchored_to = max(report.anchored_to or 0, anchor.seq)
        else:
            report.findings.append(Finding(anchor.seq, problem))
    return report


def _problem(
    anchor: Checkpoint, hashes: Mapping[int, str], last: int, keys: Mapping[str, ec.EllipticCurvePublicKey]
) -> str | None:
    seq = anchor.seq
    if keys:
        key = keys.get(anchor.key_fingerprint)
        if key is None:
            known = ", ".join(f"{fingerprint[:16]}..." for fingerprint in keys)
            return (
                f"the DSP's anchor of entry {seq} was signed by key {anchor.key_fingerprint[:16]}..., not by the "
                f"station's key ({known}): the station key, or the whole database, was replaced"
            )
        message = checkpoint_message(anchor.station, seq, anchor.hash, anchor.at)
        if not verify_raw(key, message, anchor.signature):
            return f"the DSP's anchor of entry {seq} has a bad signature: it is not what the station signed"
    if seq > last:
        return (
            f"the DSP holds an anchor of entry {seq} but the local trail ends at entry {last}: "
            f"entries {last + 1}..{seq} at least were cut"
        )
    local = hashes.get(seq)
    if local != anchor.hash:
        return (
            f"entry {seq} differs from the DSP's anchor (local hash {str(local)[:16]}..., anchored "
            f"{anchor.hash[:16]}...): the history was rewritten, or the database replaced"
        )
    return None
