"""The store: the station's state in SQLite (WAL), and the only writer of it.

Every state change is one transaction, and every transaction that changes what happened to a hub also appends its
audit entry, so the record and the audit trail can never disagree. A job's final state, its audit entry, its outbound
report message and its charge line are written together in `finish_job`.

The schema is versioned: `MIGRATIONS[i]` takes the database from version i to i+1, and `open` applies whatever is
missing inside one transaction, so a crash mid-migration leaves the old version intact.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from firmware_catalog.catalog import CatalogPin
from firmware_catalog.eui64 import normalise_eui64
from firmware_catalog.keys import fingerprint, load_private_key
from station import crash_point
from station.audit import GENESIS, AuditEntry, Checkpoint, entry_hash, sign_checkpoint
from station.config import StationConfig
from station.orders import OrderImportError, OrderRequest
from station.outcome import Interruption, Outcome

__all__ = ["MIGRATIONS", "Actor", "FlashStep", "JobRecord", "OutboxRow", "Store", "StoreError"]

log = logging.getLogger(__name__)

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE orders (
        ref TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('dcc', 'stock')),
        requesting_party TEXT,
        region TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('open', 'closed')),
        imported_at TEXT NOT NULL,
        closed_at TEXT,
        source TEXT NOT NULL,
        source_sha256 TEXT NOT NULL
    );
    CREATE TABLE order_hubs (
        order_ref TEXT NOT NULL REFERENCES orders(ref),
        chf_id TEXT NOT NULL,
        line INTEGER NOT NULL,
        PRIMARY KEY (order_ref, chf_id)
    );
    CREATE INDEX order_hubs_by_chf ON order_hubs(chf_id);
    CREATE TABLE custody (
        id INTEGER PRIMARY KEY,
        chf_id TEXT NOT NULL,
        order_ref TEXT,
        event TEXT NOT NULL CHECK (event IN ('received', 'on_bench', 'processed', 'dispatched')),
        slot TEXT,
        operator TEXT NOT NULL,
        at TEXT NOT NULL,
        asked INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX custody_by_chf ON custody(chf_id);
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        chf_id TEXT NOT NULL,
        gpf_id TEXT,
        order_ref TEXT,
        slot TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('running', 'interrupted', 'final')),
        outcome TEXT,
        reason TEXT,
        manufacturer TEXT,
        model TEXT,
        hardware_version TEXT,
        firmware_before TEXT,
        firmware_after TEXT,
        target_version TEXT,
        image_sha256 TEXT,
        hub_sha256 TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        operator TEXT NOT NULL,
        facility TEXT NOT NULL,
        audit_hash TEXT,
        CHECK ((state = 'final') = (outcome IS NOT NULL))
    );
    CREATE INDEX jobs_by_chf ON jobs(chf_id);
    -- A hub has at most one final outcome per order (and per visit when no order names it).
    CREATE UNIQUE INDEX one_final_outcome ON jobs(chf_id, order_ref) WHERE state = 'final' AND order_ref IS NOT NULL;
    CREATE TABLE attempts (
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        number INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        result TEXT,
        detail TEXT,
        bytes_sent INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (job_id, number)
    );
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        station TEXT NOT NULL,
        operator TEXT NOT NULL,
        facility TEXT NOT NULL,
        data TEXT NOT NULL,
        prev TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE
    );
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
    CREATE TABLE audit_checkpoints (
        seq INTEGER PRIMARY KEY,
        hash TEXT NOT NULL,
        at TEXT NOT NULL,
        station TEXT NOT NULL,
        key_fingerprint TEXT NOT NULL,
        signature BLOB NOT NULL
    );
    CREATE TABLE outbox (
        message_id TEXT PRIMARY KEY,
        job_id INTEGER REFERENCES jobs(id),
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'at_broker', 'confirmed', 'rejected')),
        created_at TEXT NOT NULL,
        published_at TEXT,
        confirmed_at TEXT,
        publishes INTEGER NOT NULL DEFAULT 0,
        ack TEXT
    );
    CREATE INDEX outbox_open ON outbox(state) WHERE state IN ('pending', 'at_broker');
    CREATE TABLE charges (
        order_ref TEXT NOT NULL,
        chf_id TEXT NOT NULL,
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        outcome TEXT NOT NULL,
        amount_pence INTEGER NOT NULL,
        currency TEXT NOT NULL,
        PRIMARY KEY (order_ref, chf_id)
    );
    CREATE TABLE catalog_pin (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        serial INTEGER NOT NULL,
        digest TEXT NOT NULL,
        accepted_at TEXT NOT NULL
    );
    """,
    # The flash step a job has begun, written before the first byte goes to the hub: a job resumed after a stop
    # must know that its hub may already run the target, so that it proves and records it rather than deciding
    # afresh from the hub's new version (which would report ALREADY_CURRENT with the old version to the DSP).
    # `upgrade_image_sha256` is the whole envelope flashed, beside the Manufacturer Image hash in `image_sha256`.
    """
    ALTER TABLE jobs ADD COLUMN step_target TEXT;
    ALTER TABLE jobs ADD COLUMN step_image_sha256 TEXT;
    ALTER TABLE jobs ADD COLUMN step_upgrade_image_sha256 TEXT;
    ALTER TABLE jobs ADD COLUMN upgrade_image_sha256 TEXT;
    """,
    # Contract 1.1 (docs/mqtt-api.md): each hub result carries the station's result sequence number; each outbox
    # row its own retry time (exponential backoff) and the broker's last refusal, so a refused row stays pending.
    """
    ALTER TABLE jobs ADD COLUMN result_sequence INTEGER;
    CREATE UNIQUE INDEX jobs_by_result_sequence ON jobs(result_sequence) WHERE result_sequence IS NOT NULL;
    ALTER TABLE outbox ADD COLUMN next_attempt_at TEXT;
    ALTER TABLE outbox ADD COLUMN refusals INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE outbox ADD COLUMN last_error TEXT;
    """,
)


class StoreError(Exception):
    """A state change the store refuses (it would break an invariant); nothing was written."""


@dataclass(frozen=True)
class Actor:
    """Who writes: every record carries the station, the operator and the facility approval reference."""

    station: str
    operator: str
    facility: str


@dataclass(frozen=True)
class OutboxRow:
    message_id: str
    kind: str
    payload: str
    state: str
    publishes: int
    refusals: int = 0


@dataclass(frozen=True)
class FlashStep:
    """The flash a job began: target version, Manufacturer Image hash and whole-envelope hash."""

    target: str
    image_sha256: str
    upgrade_image_sha256: str


@dataclass(frozen=True)
class JobRecord:
    id: int
    chf_id: str
    gpf_id: str | None
    order_ref: str | None
    slot: str
    state: str
    outcome: str | None
    reason: str | None
    manufacturer: str | None
    model: str | None
    hardware_version: str | None
    firmware_before: str | None
    firmware_after: str | None
    target_version: str | None
    image_sha256: str | None
    hub_sha256: str | None
    attempts: int
    started_at: str
    finished_at: str | None
    operator: str
    facility: str
    audit_hash: str | None
    step_target: str | None = None
    step_image_sha256: str | None = None
    step_upgrade_image_sha256: str | None = None
    upgrade_image_sha256: str | None = None
    result_sequence: int | None = None


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Store:
    """The station's durable state. One instance per process; every method is one transaction."""

    def __init__(
        self,
        path: str | Path,
        actor: Actor,
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
        checkpoint_every: int = 100,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.path = Path(path)
        self.actor = actor
        self._key = key
        self._checkpoint_every = checkpoint_every
        self._clock = clock
        self._appended: list[str] = []
        self._write_error: str | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE) so that each state change is exactly one.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed outcome survives a power cut, not only a process kill.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    @classmethod
    def from_config(cls, config: StationConfig) -> Store:
        section = config.station
        key = load_private_key(config.resolve(section.key)) if section.key is not None else None
        return cls(
            config.resolve(section.store),
            Actor(section.id, section.operator, section.facility_approval),
            key=key,
            checkpoint_every=section.checkpoint_every,
        )

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey | None:
        return self._key.public_key() if self._key is not None else None

    # -- plumbing -------------------------------------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()

    def now(self) -> str:
        return self._clock().astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """One state change, all or nothing. When the disk is full or read-only (or fails) the change is not made,
        the error is raised to the caller, and the store says so once, then once more when a write succeeds again
        (`writable`): the callers retry, and nothing is written twice or half."""
        cursor = self._db.cursor()
        self._appended = []
        try:
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
                cursor.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        except sqlite3.OperationalError as exc:
            self._write_failed(exc)
            raise
        self._write_succeeded()
        for kind in self._appended:
            crash_point.reached(f"after:{kind}")

    def _rollback(self) -> None:
        # SQLite may already have rolled back (SQLITE_FULL at COMMIT does); a ROLLBACK that fails must not hide the
        # error that caused it, and must not leave a transaction open for the next BEGIN to trip over.
        if self._db.in_transaction:
            with suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    @property
    def writable(self) -> bool:
        """False from a failed write (disk full, read-only, I/O error) until the next write that succeeds."""
        return self._write_error is None

    def _write_failed(self, exc: sqlite3.OperationalError) -> None:
        if self._write_error is None:
            log.error("store %s: cannot write: %s; the station goes on and catches up when it can write", self.path,
                      exc)  # fmt: skip
        self._write_error = str(exc)

    def _write_succeeded(self) -> None:
        if self._write_error is not None:
            log.warning("store %s: writing again (it could not since: %s)", self.path, self._write_error)
            self._write_error = None

    @property
    def schema_version(self) -> int:
        version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
        return version

    def _migrate(self) -> None:
        current = self.schema_version
        if current > len(MIGRATIONS):
            raise StoreError(
                f"{self.path}: schema version {current} is newer than this software knows ({len(MIGRATIONS)})"
            )
        for version in range(current, len(MIGRATIONS)):
            with self.transaction() as cur:
                for statement in _statements(MIGRATIONS[version]):
                    cur.execute(statement)
                cur.execute(f"PRAGMA user_version = {version + 1}")

    # -- audit ----------------------------------------------------------------------------------------------------

    def _append_audit(self, cur: sqlite3.Cursor, kind: str, data: dict[str, Any]) -> AuditEntry:
        row = cur.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (row["seq"] + 1, row["hash"]) if row else (1, GENESIS)
        draft = AuditEntry(
            seq=seq,
            at=self.now(),
            kind=kind,
            station=self.actor.station,
            operator=self.actor.operator,
            facility=self.actor.facility,
            data=data,
            prev=prev,
            hash="",
        )
        entry = dataclasses.replace(draft, hash=entry_hash(draft.body()))
        cur.execute(
            "INSERT INTO audit (seq, at, kind, station, operator, facility, data, prev, hash) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (seq, entry.at, kind, entry.station, entry.operator, entry.facility, json.dumps(data), prev, entry.hash),
        )
        if self._key is not None and seq % self._checkpoint_every == 0:
            self._write_checkpoint(cur, seq, entry.hash)
        self._appended.append(kind)
        crash_point.reached(f"during:{kind}")
        return entry

    def _write_checkpoint(self, cur: sqlite3.Cursor, seq: int, hash_hex: str) -> None:
        assert self._key is not None
        at = self.now()
        signature = sign_checkpoint(self._key, self.actor.station, seq, hash_hex, at)
        cur.execute(
            "INSERT OR REPLACE INTO audit_checkpoints (seq, hash, at, station, key_fingerprint, signature) "
            "VALUES (?,?,?,?,?,?)",
            (seq, hash_hex, at, self.actor.station, fingerprint(self._key.public_key()), signature),
        )

    def audit(self, kind: str, **data: Any) -> AuditEntry:
        """Record an event that changes no other state (operator sign-in, configuration at start, a decision)."""
        with self.transaction() as cur:
            return self._append_audit(cur, kind, data)

    def checkpoint(self) -> int | None:
        """Sign the newest entry now (at shutdown, so the tail is covered); returns its sequence number."""
        if self._key is None:
            return None
        with self.transaction() as cur:
            row = cur.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            if row is None:
                return None
            self._write_checkpoint(cur, row["seq"], row["hash"])
            return int(row["seq"])

    def audit_entries(self, since: str | None = None) -> Iterator[AuditEntry]:
        rows = (
            self._db.execute("SELECT * FROM audit WHERE at >= ? ORDER BY seq", (since,))
            if since
            else self._db.execute("SELECT * FROM audit ORDER BY seq")
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

    def audit_checkpoints(self) -> list[Checkpoint]:
        return [
            Checkpoint(
                seq=row["seq"],
                hash=row["hash"],
                at=row["at"],
                station=row["station"],
                key_fingerprint=row["key_fingerprint"],
                signature=bytes(row["signature"]),
            )
            for row in self._db.execute("SELECT * FROM audit_checkpoints ORDER BY seq")
        ]

    # -- catalog --------------------------------------------------------------------------------------------------

    def catalog_pin(self) -> CatalogPin | None:
        row = self._db.execute("SELECT serial, digest FROM catalog_pin WHERE id = 1").fetchone()
        return CatalogPin(row["serial"], row["digest"]) if row else None

    def record_catalog(self, accepted: bool, code: str, message: str, pin: CatalogPin | None, folder: str) -> None:
        """Catalog offers go in the audit trail either way; an accepted one also becomes the rollback floor."""
        with self.transaction() as cur:
            if accepted and pin is not None:
                cur.execute(
                    "INSERT INTO catalog_pin (id, serial, digest, accepted_at) VALUES (1, ?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET serial=excluded.serial, digest=excluded.digest, "
                    "accepted_at=excluded.accepted_at",
                    (pin.serial, pin.digest, self.now()),
                )
            self._append_audit(
                cur,
                "catalog_accepted" if accepted else "catalog_refused",
                {
                    "folder": folder,
                    "code": code,
                    "message": message,
                    "serial": pin.serial if pin else None,
                    "digest": pin.digest if pin else None,
                },
            )

    # -- orders and custody ---------------------------------------------------------------------------------------

    def import_order(self, request: OrderRequest) -> None:
        """Store a request whole, or nothing: problems against what is already stored are listed like file ones."""
        with self.transaction() as cur:
            problems: list[str] = []
            if cur.execute("SELECT 1 FROM orders WHERE ref = ?", (request.ref,)).fetchone():
                problems.append(f"order_ref {request.ref!r} was already imported")
            for chf_id, line in request.hubs:
                other = cur.execute(
                    "SELECT o.ref FROM order_hubs h JOIN orders o ON o.ref = h.order_ref "
                    "WHERE h.chf_id = ? AND o.state = 'open'",
                    (chf_id,),
                ).fetchone()
                if other is not None:
                    problems.append(f"line {line}: chf_id {chf_id} is already in open order {other['ref']}")
            if problems:
                raise OrderImportError(request.source, problems)
            cur.execute(
                "INSERT INTO orders (ref, kind, requesting_party, region, state, imported_at, source, source_sha256) "
                "VALUES (?,?,?,?, 'open', ?,?,?)",
                (
                    request.ref,
                    request.kind,
                    request.requesting_party,
                    request.region,
                    self.now(),
                    request.source,
                    request.sha256,
                ),
            )
            cur.executemany(
                "INSERT INTO order_hubs (order_ref, chf_id, line) VALUES (?,?,?)",
                [(request.ref, chf_id, line) for chf_id, line in request.hubs],
            )
            self._append_audit(
                cur,
                "order_imported",
                {
                    "order_ref": request.ref,
                    "kind": request.kind,
                    "requesting_party": request.requesting_party,
                    "region": request.region,
                    "hubs": len(request.hubs),
                    "source": request.source,
                    "source_sha256": request.sha256,
                },
            )

    def order(self, ref: str) -> sqlite3.Row:
        row: sqlite3.Row | None = self._db.execute("SELECT * FROM orders WHERE ref = ?", (ref,)).fetchone()
        if row is None:
            raise StoreError(f"no order {ref!r}")
        return row

    def open_order_for(self, chf_id: str) -> str | None:
        row = self._db.execute(
            "SELECT o.ref FROM order_hubs h JOIN orders o ON o.ref = h.order_ref "
            "WHERE h.chf_id = ? AND o.state = 'open'",
            (chf_id,),
        ).fetchone()
        return None if row is None else str(row["ref"])

    def scanned_in(self, chf_id: str, order_ref: str) -> bool:
        """Whether the hub was scanned in (received) to `order_ref`, which asked for it: custody has begun."""
        row = self._db.execute(
            "SELECT 1 FROM custody WHERE chf_id = ? AND order_ref = ? AND event = 'received' AND asked = 1 LIMIT 1",
            (chf_id, order_ref),
        ).fetchone()
        return row is not None

    def receive(self, order_ref: str, chf_id: str) -> bool:
        """Scan-in. Returns whether the order asked for the hub; an unasked hub is recorded, and held."""
        chf_id = normalise_eui64(chf_id)
        with self.transaction() as cur:
            order = cur.execute("SELECT state FROM orders WHERE ref = ?", (order_ref,)).fetchone()
            if order is None:
                raise StoreError(f"no order {order_ref!r}")
            if order["state"] != "open":
                raise StoreError(f"order {order_ref} is closed")
            asked = (
                cur.execute(
                    "SELECT 1 FROM order_hubs WHERE order_ref = ? AND chf_id = ?", (order_ref, chf_id)
                ).fetchone()
                is not None
            )
            cur.execute(
                "INSERT INTO custody (chf_id, order_ref, event, operator, at, asked) VALUES (?,?, 'received', ?,?,?)",
                (chf_id, order_ref, self.actor.operator, self.now(), int(asked)),
            )
            self._append_audit(cur, "hub_received", {"order_ref": order_ref, "chf_id": chf_id, "asked": asked})
            return asked

    def dispatch(self, order_ref: str, chf_id: str) -> str:
        """Scan-out. Only a hub with a final outcome in the order (or one that arrived unasked) may leave."""
        chf_id = normalise_eui64(chf_id)
        with self.transaction() as cur:
            job = cur.execute(
                "SELECT outcome FROM jobs WHERE order_ref = ? AND chf_id = ? AND state = 'final'", (order_ref, chf_id)
            ).fetchone()
            unasked = cur.execute(
                "SELECT 1 FROM custody WHERE order_ref = ? AND chf_id = ? AND event = 'received' AND asked = 0",
                (order_ref, chf_id),
            ).fetchone()
            if job is None and unasked is None:
                raise StoreError(f"hub {chf_id} has no final outcome in order {order_ref}: it was not processed")
            if cur.execute(
                "SELECT 1 FROM custody WHERE order_ref = ? AND chf_id = ? AND event = 'dispatched'", (order_ref, chf_id)
            ).fetchone():
                raise StoreError(f"hub {chf_id} was already dispatched in order {order_ref}")
            outcome = str(job["outcome"]) if job is not None else "UNASKED"
            cur.execute(
                "INSERT INTO custody (chf_id, order_ref, event, operator, at, asked) VALUES (?,?, 'dispatched', ?,?,?)",
                (chf_id, order_ref, self.actor.operator, self.now(), int(unasked is None)),
            )
            self._append_audit(cur, "hub_dispatched", {"order_ref": order_ref, "chf_id": chf_id, "outcome": outcome})
            return outcome

    def close_order(
        self, ref: str, summary: dict[str, Any], message: Callable[[str, str], dict[str, Any]] | None = None
    ) -> AuditEntry:
        """Close an order; `message(message_id, closed_at)` builds the order summary queued in the same transaction."""
        with self.transaction() as cur:
            order = cur.execute("SELECT state FROM orders WHERE ref = ?", (ref,)).fetchone()
            if order is None:
                raise StoreError(f"no order {ref!r}")
            if order["state"] == "closed":
                raise StoreError(f"order {ref} is already closed")
            closed_at = self.now()
            cur.execute("UPDATE orders SET state = 'closed', closed_at = ? WHERE ref = ?", (closed_at, ref))
            if message is not None:
                message_id = str(uuid.uuid4())
                cur.execute(
                    "INSERT INTO outbox (message_id, job_id, kind, payload, state, created_at) "
                    "VALUES (?, NULL, 'order_summary', ?, 'pending', ?)",
                    (message_id, json.dumps(message(message_id, closed_at), sort_keys=True), closed_at),
                )
            return self._append_audit(cur, "order_closed", {"order_ref": ref, **summary})

    # -- jobs -----------------------------------------------------------------------------------------------------

    def interrupt_running_jobs(self) -> list[int]:
        """At start: jobs left running by a crash are marked interrupted, never done. Returns their ids."""
        with self.transaction() as cur:
            ids = [row["id"] for row in cur.execute("SELECT id FROM jobs WHERE state = 'running'").fetchall()]
            for job_id in ids:
                cur.execute("UPDATE jobs SET state = 'interrupted' WHERE id = ?", (job_id,))
                cur.execute(
                    "UPDATE attempts SET finished_at = ?, result = 'interrupted' "
                    "WHERE job_id = ? AND finished_at IS NULL",
                    (self.now(), job_id),
                )
                self._append_audit(
                    cur,
                    "job_interrupted",
                    {"job_id": job_id, "cause": "station restarted", "code": Interruption.STATION_STOPPING.value},
                )
            return ids

    def start_job(
        self,
        *,
        chf_id: str,
        gpf_id: str | None,
        order_ref: str | None,
        slot: str,
        identity: dict[str, Any],
    ) -> int:
        """A hub identified on a slot. Resumes the hub's interrupted job in this order if there is one."""
        with self.transaction() as cur:
            final = cur.execute(
                "SELECT id, outcome FROM jobs WHERE chf_id = ? AND order_ref IS ? AND state = 'final'",
                (chf_id, order_ref),
            ).fetchone()
            if final is not None and order_ref is not None:
                raise StoreError(f"hub {chf_id} already has outcome {final['outcome']} in order {order_ref}")
            prior = cur.execute(
                "SELECT id FROM jobs WHERE chf_id = ? AND order_ref IS ? AND state IN ('interrupted', 'running') "
                "ORDER BY id DESC LIMIT 1",
                (chf_id, order_ref),
            ).fetchone()
            now = self.now()
            if prior is not None:
                job_id = int(prior["id"])
                cur.execute("UPDATE jobs SET state = 'running', slot = ? WHERE id = ?", (slot, job_id))
                resumed = True
            else:
                cur.execute(
                    "INSERT INTO jobs (chf_id, gpf_id, order_ref, slot, state, manufacturer, model, hardware_version, "
                    "firmware_before, started_at, operator, facility) VALUES (?,?,?,?, 'running', ?,?,?,?,?,?,?)",
                    (
                        chf_id,
                        gpf_id,
                        order_ref,
                        slot,
                        identity.get("manufacturer"),
                        identity.get("model"),
                        identity.get("hardware_version"),
                        identity.get("firmware_version"),
                        now,
                        self.actor.operator,
                        self.actor.facility,
                    ),
                )
                job_id = int(cur.lastrowid or 0)
                resumed = False
            cur.execute(
                "INSERT INTO custody (chf_id, order_ref, event, slot, operator, at) VALUES (?,?,?,?,?,?)",
                (chf_id, order_ref, "on_bench", slot, self.actor.operator, now),
            )
            self._append_audit(
                cur,
                "job_resumed" if resumed else "job_started",
                {"job_id": job_id, "slot": slot, "order_ref": order_ref, "identity": identity},
            )
            return job_id

    def suspend_job(self, job_id: int, cause: str, **data: Any) -> None:
        """A job that stops without an outcome (the station is stopping, no catalog is in force, another hub is on
        the jig): it is marked interrupted, never done, and is resumed when its hub is seen again. `data` (a reason
        code, the hubs involved) goes into the audit entry."""
        with self.transaction() as cur:
            cur.execute("UPDATE jobs SET state = 'interrupted' WHERE id = ? AND state = 'running'", (job_id,))
            cur.execute(
                "UPDATE attempts SET finished_at = ?, result = 'interrupted', detail = ? "
                "WHERE job_id = ? AND finished_at IS NULL",
                (self.now(), cause, job_id),
            )
            self._append_audit(cur, "job_interrupted", {"job_id": job_id, "cause": cause, **data})

    def begin_step(self, job_id: int, step: FlashStep, **data: Any) -> AuditEntry:
        """A flash step begins (before the first byte goes to the hub): the job remembers its target and envelope,
        and the audit records `transfer_started`, in one transaction."""
        with self.transaction() as cur:
            cur.execute(
                "UPDATE jobs SET step_target = ?, step_image_sha256 = ?, step_upgrade_image_sha256 = ? WHERE id = ?",
                (step.target, step.image_sha256, step.upgrade_image_sha256, job_id),
            )
            return self._append_audit(
                cur,
                "transfer_started",
                {
                    "job_id": job_id,
                    "target": step.target,
                    "image_sha256": step.image_sha256,
                    "upgrade_image_sha256": step.upgrade_image_sha256,
                    **data,
                },
            )

    def flash_step(self, job_id: int) -> FlashStep | None:
        """The last flash step the job began, if any."""
        job = self.job(job_id)
        if job.step_target is None or job.step_image_sha256 is None or job.step_upgrade_image_sha256 is None:
            return None
        return FlashStep(job.step_target, job.step_image_sha256, job.step_upgrade_image_sha256)

    def latest_job(self, chf_id: str) -> JobRecord | None:
        """The hub's most recent job, in any order or none."""
        row = self._db.execute("SELECT * FROM jobs WHERE chf_id = ? ORDER BY id DESC LIMIT 1", (chf_id,)).fetchone()
        return None if row is None else _job(row)

    def final_job(self, chf_id: str, order_ref: str) -> JobRecord | None:
        row = self._db.execute(
            "SELECT * FROM jobs WHERE chf_id = ? AND order_ref = ? AND state = 'final'", (chf_id, order_ref)
        ).fetchone()
        return None if row is None else _job(row)

    def begin_attempt(self, job_id: int, detail: str = "") -> int:
        with self.transaction() as cur:
            query = "SELECT COALESCE(MAX(number), 0) + 1 FROM attempts WHERE job_id = ?"
            number = int(cur.execute(query, (job_id,)).fetchone()[0])
            cur.execute(
                "INSERT INTO attempts (job_id, number, started_at, detail) VALUES (?,?,?,?)",
                (job_id, number, self.now(), detail),
            )
            cur.execute("UPDATE jobs SET attempts = ? WHERE id = ?", (number, job_id))
            self._append_audit(cur, "attempt_started", {"job_id": job_id, "attempt": number, "detail": detail})
            return number

    def end_attempt(self, job_id: int, number: int, result: str, detail: str, bytes_sent: int) -> None:
        with self.transaction() as cur:
            cur.execute(
                "UPDATE attempts SET finished_at = ?, result = ?, detail = ?, bytes_sent = ? "
                "WHERE job_id = ? AND number = ?",
                (self.now(), result, detail, bytes_sent, job_id, number),
            )
            self._append_audit(
                cur,
                "attempt_ended",
                {"job_id": job_id, "attempt": number, "result": result, "detail": detail, "bytes_sent": bytes_sent},
            )

    def record_event(self, job_id: int, kind: str, **data: Any) -> AuditEntry:
        """A job step worth its own audit entry: decision, transfer start and end, verify, activate, read back."""
        with self.transaction() as cur:
            return self._append_audit(cur, kind, {"job_id": job_id, **data})

    def finish_job(
        self,
        job_id: int,
        *,
        outcome: Outcome,
        reason: str,
        firmware_after: str | None,
        target_version: str | None,
        image_sha256: str | None,
        hub_sha256: str | None,
        upgrade_image_sha256: str | None = None,
        charge_pence: int,
        currency: str,
        report: Callable[[JobRecord, AuditEntry, str], dict[str, Any]],
    ) -> JobRecord:
        """The ONE transaction: final state, audit entry, outbox message (built by `report`) and charge line."""
        with self.transaction() as cur:
            row = cur.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise StoreError(f"no job {job_id}")
            if row["state"] == "final":
                raise StoreError(f"job {job_id} already has outcome {row['outcome']}")
            now = self.now()
            cur.execute(
                "UPDATE jobs SET state = 'final', outcome = ?, reason = ?, firmware_after = ?, target_version = ?, "
                "image_sha256 = ?, hub_sha256 = ?, upgrade_image_sha256 = ?, finished_at = ? WHERE id = ?",
                (outcome.value, reason, firmware_after, target_version, image_sha256, hub_sha256,
                 upgrade_image_sha256, now, job_id),
            )  # fmt: skip
            cur.execute(
                "INSERT INTO custody (chf_id, order_ref, event, slot, operator, at) VALUES (?,?,?,?,?,?)",
                (row["chf_id"], row["order_ref"], "processed", row["slot"], self.actor.operator, now),
            )
            entry = self._append_audit(
                cur,
                "job_finished",
                {
                    "job_id": job_id,
                    "chf_id": row["chf_id"],
                    "order_ref": row["order_ref"],
                    "outcome": outcome.value,
                    "reason": reason,
                    "firmware_before": row["firmware_before"],
                    "firmware_after": firmware_after,
                    "image_sha256": image_sha256,
                    "upgrade_image_sha256": upgrade_image_sha256,
                    "hub_sha256": hub_sha256,
                },
            )
            # The station's result counter (contract 1.1): assigned with the outcome, so it never has a gap.
            sequence = cur.execute("SELECT COALESCE(MAX(result_sequence), 0) + 1 FROM jobs").fetchone()[0]
            cur.execute(
                "UPDATE jobs SET audit_hash = ?, result_sequence = ? WHERE id = ?", (entry.hash, sequence, job_id)
            )
            record = _job(cur.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())
            message_id = str(uuid.uuid4())
            payload = report(record, entry, message_id)
            cur.execute(
                "INSERT INTO outbox (message_id, job_id, kind, payload, state, created_at) "
                "VALUES (?,?,?,?, 'pending', ?)",
                (message_id, job_id, "hub_result", json.dumps(payload, sort_keys=True), now),
            )
            if row["order_ref"] is not None:
                cur.execute(
                    "INSERT INTO charges (order_ref, chf_id, job_id, outcome, amount_pence, currency) "
                    "VALUES (?,?,?,?,?,?)",
                    (row["order_ref"], row["chf_id"], job_id, outcome.value, charge_pence, currency),
                )
            return record

    # -- outbox ---------------------------------------------------------------------------------------------------

    def outbox_due(self, limit: int, now: str, *, republish: bool = True, kind: str | None = None) -> list[OutboxRow]:
        """Rows to publish now: pending rows whose retry time has come (never published, or refused by the broker),
        and, with `republish`, rows at the broker whose retry time has come without a DSP ack. `kind` keeps to one
        kind of message (a one-shot command publishes only its order summary)."""
        rows = self._db.execute(
            "SELECT message_id, kind, payload, state, publishes, refusals FROM outbox "
            "WHERE ((state = 'pending' AND COALESCE(next_attempt_at, '') <= ?1) "
            "OR (?2 AND state = 'at_broker' AND COALESCE(next_attempt_at, '') <= ?1)) "
            "AND (?4 IS NULL OR kind = ?4) "
            "ORDER BY created_at, message_id LIMIT ?3",
            (now, republish, limit, kind),
        ).fetchall()
        return [
            OutboxRow(r["message_id"], r["kind"], r["payload"], r["state"], r["publishes"], r["refusals"]) for r in rows
        ]

    def outbox_published(
        self, message_ids: Sequence[str], *, needs_ack: bool = True, retry_at: Mapping[str, str] | None = None
    ) -> None:
        """PUBACK received (success): the broker holds them. A kind the DSP does not ack is done at this point.
        `retry_at` is when each is published again if no DSP ack comes. The count of publishes always grows, even
        when the DSP's ack was recorded first (the ack can overtake the PUBACK)."""
        if not message_ids:
            return
        now = self.now()
        state, confirmed_at = ("at_broker", None) if needs_ack else ("confirmed", now)
        retry = retry_at or {}
        with self.transaction() as cur:
            cur.executemany(
                "UPDATE outbox SET publishes = publishes + 1, published_at = ?1, next_attempt_at = ?2, "
                "last_error = NULL, "
                "confirmed_at = CASE WHEN state IN ('pending', 'at_broker') THEN ?3 ELSE confirmed_at END, "
                "state = CASE WHEN state IN ('pending', 'at_broker') THEN ?4 ELSE state END "
                "WHERE message_id = ?5",
                [(now, retry.get(message_id), confirmed_at, state, message_id) for message_id in message_ids],
            )
        crash_point.reached("after:published")

    def outbox_refused(self, refusals: Sequence[tuple[str, str, str]]) -> None:
        """The broker refused these publishes (message_id, reason, retry_at): the rows keep their state (a refused
        row is not at the broker) and are tried again at retry_at."""
        if not refusals:
            return
        with self.transaction() as cur:
            cur.executemany(
                "UPDATE outbox SET refusals = refusals + 1, last_error = ?, next_attempt_at = ? "
                "WHERE message_id = ? AND state IN ('pending', 'at_broker')",
                [(reason, retry_at, message_id) for message_id, reason, retry_at in refusals],
            )

    def outbox_acked(self, acks: Sequence[tuple[str, str, str | None]]) -> int:
        """DSP acks (message_id, result, reason): confirmed (applied or duplicate) or rejected. One audit entry
        records the batch. Returns how many rows changed; an ack for an unknown or settled message changes none."""
        if not acks:
            return 0
        now = self.now()
        settled: list[dict[str, str | None]] = []
        with self.transaction() as cur:
            for message_id, result, reason in acks:
                state = "rejected" if result == "rejected" else "confirmed"
                # An ack proves a publish: a row whose PUBACK is not recorded yet still counts one.
                cur.execute(
                    "UPDATE outbox SET state = ?, confirmed_at = ?, ack = ?, publishes = MAX(publishes, 1) "
                    "WHERE message_id = ? AND state IN ('pending', 'at_broker')",
                    (state, now, json.dumps({"result": result, "reason": reason}), message_id),
                )
                if cur.rowcount:
                    settled.append({"message_id": message_id, "result": result, "reason": reason})
            if settled:
                self._append_audit(cur, "dsp_acks", {"acks": settled})
        return len(settled)

    def outbox_resend(self, first: int, last: int, asked_by: str) -> int:
        """A DSP asked for results `first`..`last` (by sequence) again: every one this station holds is queued to be
        published now, whatever its state, and the request is one audit entry. Returns how many were queued."""
        with self.transaction() as cur:
            queued = cur.execute(
                "UPDATE outbox SET state = 'pending', next_attempt_at = NULL "
                "WHERE kind = 'hub_result' AND job_id IN "
                "(SELECT id FROM jobs WHERE result_sequence BETWEEN ? AND ?)",
                (first, last),
            ).rowcount
            self._append_audit(
                cur, "resend_requested", {"from_sequence": first, "to_sequence": last, "by": asked_by, "queued": queued}
            )
            return int(queued)

    def outbox_backlog(self) -> dict[str, Any]:
        """What `reflash status` shows of the outbox: counts by state, the oldest unconfirmed row's creation time,
        rows the broker refused last time, and the last DSP ack recorded."""
        row = self._db.execute(
            "SELECT MIN(created_at) AS oldest, SUM(last_error IS NOT NULL) AS refused FROM outbox "
            "WHERE state IN ('pending', 'at_broker')"
        ).fetchone()
        last_ack = self._db.execute(
            "SELECT MAX(confirmed_at) FROM outbox WHERE ack IS NOT NULL AND state IN ('confirmed', 'rejected')"
        ).fetchone()[0]
        refusal = self._db.execute(
            "SELECT last_error FROM outbox WHERE last_error IS NOT NULL AND state IN ('pending', 'at_broker') "
            "ORDER BY next_attempt_at DESC LIMIT 1"
        ).fetchone()
        return {
            **self.outbox_counts(),
            "oldest_unconfirmed_at": row["oldest"],
            "refused": int(row["refused"] or 0),
            "last_refusal": refusal[0] if refusal else None,
            "last_dsp_ack_at": last_ack,
        }

    def outbox_counts(self) -> dict[str, int]:
        counts = {"pending": 0, "at_broker": 0, "confirmed": 0, "rejected": 0}
        for row in self._db.execute("SELECT state, COUNT(*) AS n FROM outbox GROUP BY state"):
            counts[row["state"]] = row["n"]
        return counts

    def job(self, job_id: int) -> JobRecord:
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise StoreError(f"no job {job_id}")
        return _job(row)

    def jobs(self, *, order_ref: str | None = None, chf_id: str | None = None) -> list[JobRecord]:
        clauses, params = [], []
        if order_ref is not None:
            clauses.append("order_ref = ?")
            params.append(order_ref)
        if chf_id is not None:
            clauses.append("chf_id = ?")
            params.append(chf_id)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return [_job(row) for row in self._db.execute(f"SELECT * FROM jobs{where} ORDER BY id", params)]  # noqa: S608

    def rows(self, query: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Read-only queries for reports and status; writes go through the methods above."""
        return list(self._db.execute(query, params))


def _job(row: sqlite3.Row) -> JobRecord:
    return JobRecord(**{key: row[key] for key in row.keys()})  # noqa: SIM118 -- sqlite3.Row has keys(), not iteration of keys


def _statements(script: str) -> list[str]:
    """Split a migration into statements (triggers contain `;`, so split on `END;` boundaries with care)."""
    statements, current = [], []
    for line in script.strip().splitlines():
        current.append(line)
        text = "\n".join(current).strip()
        if sqlite3.complete_statement(text):
            statements.append(text)
            current = []
    if "\n".join(current).strip():
        raise StoreError("a migration ends in the middle of a statement")
    return statements
