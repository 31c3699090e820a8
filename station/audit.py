"""The audit trail: append-only, hash-chained, with checkpoints signed by the station's key.

Each entry carries the SHA-256 of the previous entry, computed over a canonical encoding (JSON, keys sorted, no
spaces, UTF-8). A checkpoint signs the sequence number and hash of the entry it closes, so that cutting the tail of
the log after a checkpoint is caught as well as an edit, a removal or a reordering. The store writes entries
(`station/store.py`); this module encodes, hashes, signs and verifies them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from firmware_catalog.keys import fingerprint, verify_raw
from firmware_catalog.signer import Signer, signer_of
from station.key_handover import HANDOVER_KIND, ChainBroken, KeyChain

__all__ = [
    "GENESIS",
    "AuditEntry",
    "Checkpoint",
    "VerifyReport",
    "canonical",
    "checkpoint_message",
    "entry_hash",
    "sign_checkpoint",
    "verify_chain",
]

GENESIS = "0" * 64


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: str
    kind: str
    station: str
    operator: str
    facility: str
    data: dict[str, Any]
    prev: str
    hash: str

    def body(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "kind": self.kind,
            "station": self.station,
            "operator": self.operator,
            "facility": self.facility,
            "data": self.data,
            "prev": self.prev,
        }

    def export(self) -> dict[str, Any]:
        return {**self.body(), "hash": self.hash}


def entry_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(body)).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    at: str
    station: str
    key_fingerprint: str
    signature: bytes


def checkpoint_message(station: str, seq: int, entry_hash_hex: str, at: str) -> bytes:
    return canonical({"station": station, "seq": seq, "hash": entry_hash_hex, "at": at, "kind": "audit-checkpoint"})


def sign_checkpoint(
    key: Signer | ec.EllipticCurvePrivateKey, station: str, seq: int, entry_hash_hex: str, at: str
) -> bytes:
    return signer_of(key).sign(checkpoint_message(station, seq, entry_hash_hex, at))


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    entries: int
    checkpoints: int
    first_bad_seq: int | None
    problem: str

    def describe(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "first_bad_seq": self.first_bad_seq,
            "problem": self.problem,
        }


def verify_chain(
    entries: Iterable[AuditEntry], checkpoints: Iterable[Checkpoint], key: ec.EllipticCurvePublicKey | None
) -> VerifyReport:
    """Check every link and every checkpoint; report the first bad entry (lowest sequence number).

    `key` is the station key configured; when the trail hands its key over (station/key_handover.py), each
    checkpoint must be signed by the key the chain of handovers gives for its entry, and `key` must be in the chain.
    """
    count, prev, last_seq = 0, GENESIS, 0
    by_seq: dict[int, str] = {}
    handovers: list[tuple[int, str, str, dict[str, Any]]] = []

    def bad(seq: int, problem: str) -> VerifyReport:
        return VerifyReport(False, count, 0, seq, problem)

    for entry in entries:
        count += 1
        expected_seq = last_seq + 1
        if entry.seq != expected_seq:
            if entry.seq > expected_seq:
                return bad(expected_seq, f"entry {expected_seq} is missing (next present is {entry.seq})")
            return bad(entry.seq, f"entry {entry.seq} is out of order after {last_seq}")
        if entry.prev != prev:
            return bad(entry.seq, f"entry {entry.seq} does not follow entry {last_seq} (previous-hash mismatch)")
        if entry_hash(entry.body()) != entry.hash:
            return bad(entry.seq, f"entry {entry.seq} ({entry.kind}) was altered: its content does not match its hash")
        if entry.kind == HANDOVER_KIND:
            handovers.append((entry.seq, entry.prev, entry.station, entry.data))
        by_seq[entry.seq] = entry.hash
        prev, last_seq = entry.hash, entry.seq

    chain: KeyChain | None = None
    if key is not None:
        try:
            chain = KeyChain.follow(key, handovers)
        except ChainBroken as exc:
            return VerifyReport(False, count, 0, exc.seq, str(exc))
    checked = 0
    checkpoints = sorted(checkpoints, key=lambda c: c.seq)
    # A handover is proven by the old key's checkpoint at its entry; the first one without is a bad entry too.
    signed = {c.seq for c in checkpoints}
    unproven = next((seq for seq, *_ in handovers if seq not in signed), None) if chain is not None else None

    def no_proof(seq: int) -> VerifyReport:
        problem = f"the key handover at entry {seq} has no checkpoint signed by the old key"
        return VerifyReport(False, count, checked, seq, problem)

    for checkpoint in checkpoints:
        if unproven is not None and checkpoint.seq > unproven:
            return no_proof(unproven)
        checked += 1
        if chain is not None:
            expected = chain.key_at(checkpoint.seq)
            if not verify_raw(
                expected, checkpoint_message(checkpoint.station, checkpoint.seq, checkpoint.hash, checkpoint.at),
                checkpoint.signature,
            ):  # fmt: skip
                return VerifyReport(False, count, checked, checkpoint.seq, _bad_signature(checkpoint, expected))
        if checkpoint.seq > last_seq:
            return VerifyReport(
                False,
                count,
                checked,
                last_seq + 1,
                f"the log ends at entry {last_seq} but a signed checkpoint covers entry {checkpoint.seq}: "
                "the tail was cut",
            )
        if by_seq[checkpoint.seq] != checkpoint.hash:
            return VerifyReport(
                False, count, checked, checkpoint.seq, f"entry {checkpoint.seq} differs from its signed checkpoint"
            )
    if unproven is not None:
        return no_proof(unproven)
    return VerifyReport(True, count, checked, None, "")


def _bad_signature(checkpoint: Checkpoint, expected: ec.EllipticCurvePublicKey) -> str:
    if checkpoint.key_fingerprint != fingerprint(expected):
        return (
            f"checkpoint at entry {checkpoint.seq} is signed by key {checkpoint.key_fingerprint[:16]}, which the chain "
            f"of key handovers does not reach there (key {fingerprint(expected)[:16]} is in force)"
        )
    return f"checkpoint at entry {checkpoint.seq} has a bad signature"
