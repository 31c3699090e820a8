"""The SQLite schema of the store and its migrations: the tables every part writes, and how an older file becomes
this version.

`MIGRATIONS[i]` takes the database from version i to i+1 (SQLite's `user_version`); `migrate` applies whatever is
missing, each version in one transaction, so a crash mid-migration leaves the previous version intact. The DDL is
SQLite's own (triggers, partial indexes, `INTEGER PRIMARY KEY`): another engine brings its own schema beside its
`Database` (see `station.store.database`).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from station.store.unit_of_work import StoreError

if TYPE_CHECKING:
    from station.store.sqlite import SqliteDatabase

__all__ = ["MIGRATIONS", "migrate", "statements"]

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
    # The bench page (docs/bench-page.md): operators who sign in with a PIN, and API tokens for line controllers.
    # Only hashes are kept: a PIN as scrypt with its own salt and parameters, a token as SHA-256 (it is random).
    """
    CREATE TABLE operators (
        id TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('operator', 'supervisor')),
        pin_hash TEXT NOT NULL,
        added_at TEXT NOT NULL,
        failures INTEGER NOT NULL DEFAULT 0,
        locked_until TEXT
    );
    CREATE TABLE api_tokens (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('operator', 'supervisor')),
        token_sha256 TEXT NOT NULL UNIQUE,
        added_at TEXT NOT NULL,
        revoked_at TEXT
    );
    """,
    # Badge sign-in: an operator may also be found by the SHA-256 of their badge's code (the code itself is not kept:
    # a copy of the database must not be enough to make a badge). The PIN is still asked for.
    """
    ALTER TABLE operators ADD COLUMN badge_sha256 TEXT;
    CREATE UNIQUE INDEX operators_by_badge ON operators(badge_sha256) WHERE badge_sha256 IS NOT NULL;
    """,
)


def migrate(database: SqliteDatabase) -> None:
    """Bring the database to `len(MIGRATIONS)`; refuse a database newer than this software."""
    current = database.schema_version
    if current > len(MIGRATIONS):
        raise StoreError(
            f"{database.where}: schema version {current} is newer than this software knows ({len(MIGRATIONS)})"
        )
    for version in range(current, len(MIGRATIONS)):
        with database.transaction() as session:
            for statement in statements(MIGRATIONS[version]):
                session.execute(statement)
            session.execute(f"PRAGMA user_version = {version + 1}")


def statements(script: str) -> list[str]:
    """Split a migration into statements (triggers contain `;`, so split on `END;` boundaries with care)."""
    found, current = [], []
    for line in script.strip().splitlines():
        current.append(line)
        text = "\n".join(current).strip()
        if sqlite3.complete_statement(text):
            found.append(text)
            current = []
    if "\n".join(current).strip():
        raise StoreError("a migration ends in the middle of a statement")
    return found
