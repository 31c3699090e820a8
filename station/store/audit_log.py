"""The audit log: the hash-chained, append-only trail of everything that happened at the station, and the signed
checkpoints that pin its head.

Every part that changes what happened to a hub appends its entry here in the same transaction (`append` takes the
part's `Session`), so the record and the trail can never disagree. The chain's rules (what is hashed, what is signed)
are `station.audit`'s; this part only stores entries in order and signs every `checkpoint_every`-th one. Each
checkpoint is handed to `on_checkpoint` inside the transaction that signs it, so that its anchor at the DSP is queued
exactly when the checkpoint exists (the store sets it: `Store.anchor_checkpoints`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import ec

from firmware_catalog.keys import fingerprint
from station.audit import GENESIS, AuditEntry, Checkpoint, entry_hash, sign_checkpoint

if TYPE_CHECKING:
    from station.store.database import Session
    from station.store.unit_of_work import UnitOfWork

__all__ = ["AuditLog"]


class AuditLog:
    """The audit chain and its checkpoints."""

    def __init__(
        self, work: UnitOfWork, *, key: ec.EllipticCurvePrivateKey | None = None, checkpoint_every: int = 100
    ) -> None:
        self._work = work
        self._key = key
        self._checkpoint_every = checkpoint_every
        self.on_checkpoint: Callable[[Session, Checkpoint], None] | None = None

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey | None:
        return self._key.public_key() if self._key is not None else None

    def append(self, session: Session, kind: str, data: dict[str, Any]) -> AuditEntry:
        """Chain an entry onto the trail inside the caller's transaction."""
        row = session.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (row["seq"] + 1, row["hash"]) if row else (1, GENESIS)
        actor = self._work.actor
        draft = AuditEntry(
            seq=seq,
            at=self._work.now(),
            kind=kind,
            station=actor.station,
            operator=actor.operator,
            facility=actor.facility,
            data=data,
            prev=prev,
            hash="",
        )
        entry = dataclasses.replace(draft, hash=entry_hash(draft.body()))
        session.execute(
            "INSERT INTO audit (seq, at, kind, station, operator, facility, data, prev, hash) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (seq, entry.at, kind, entry.station, entry.operator, entry.facility, json.dumps(data), prev, entry.hash),
        )
        if self._key is not None and seq % self._checkpoint_every == 0:
            self._write_checkpoint(session, seq, entry.hash)
        self._work.appended(kind)
        return entry

    def _write_checkpoint(self, session: Session, seq: int, hash_hex: str) -> None:
        assert self._key is not None
        at = self._work.now()
        station = self._work.actor.station
        signature = sign_checkpoint(self._key, station, seq, hash_hex, at)
        checkpoint = Checkpoint(seq, hash_hex, at, station, fingerprint(self._key.public_key()), signature)
        session.execute(
            "INSERT INTO audit_checkpoints (seq, hash, at, station, key_fingerprint, signature) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT (seq) DO UPDATE SET hash = excluded.hash, at = excluded.at, station = excluded.station, "
            "key_fingerprint = excluded.key_fingerprint, signature = excluded.signature",
            (seq, hash_hex, at, station, checkpoint.key_fingerprint, signature),
        )
        if self.on_checkpoint is not None:
            self.on_checkpoint(session, checkpoint)

    def record(self, kind: str, data: dict[str, Any]) -> AuditEntry:
        """An event that changes no other state, in a transaction of its own."""
        with self._work.transaction() as session:
            return self.append(session, kind, data)

    def checkpoint(self) -> int | None:
        """Sign the newest entry now (at shutdown, so the tail is covered); returns its sequence number."""
        if self._key is None:
            return None
        with self._work.transaction() as session:
            row = session.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            if row is None:
                return None
            self._write_checkpoint(session, row["seq"], row["hash"])
            return int(row["seq"])

    def entries(self, since: str | None = None) -> Iterator[AuditEntry]:
        reader = self._work.reader()
        rows = (
            reader.execute("SELECT * FROM audit WHERE at >= ? ORDER BY seq", (since,))
            if since
            else reader.execute("SELECT * FROM audit ORDER BY seq")
        )
        for row in rows:
            yield AuditEntry(
                seq=row["seq"],
                at=row["at"],
                kind=row["kind"],
                station=row["station"],
                operator=row["operator"],
                facility=row["facility"],
                data=json.loads(row["data"]),
                prev=row["prev"],
                hash=row["hash"],
            )

    def checkpoints(self) -> list[Checkpoint]:
        return [
            Checkpoint(
                seq=row["seq"],
                hash=row["hash"],
                at=row["at"],
                station=row["station"],
                key_fingerprint=row["key_fingerprint"],
                signature=bytes(row["signature"]),
            )
            for row in self._work.reader().execute("SELECT * FROM audit_checkpoints ORDER BY seq").fetchall()
        ]
