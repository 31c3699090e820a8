"""The SQLite schema: WAL, versions and migrations, and the invariants the database holds whatever code tries."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from station.store import FlashStep, Store, StoreError
from station.store.schema import MIGRATIONS, statements
from station.store.sqlite import SqliteDatabase
from tests.station.conftest import ACTOR, RunJob, hub_id
from tests.station.store.conftest import beside


def test_wal_mode_and_schema_version(store: Store) -> None:
    assert isinstance(store.database, SqliteDatabase)
    assert store.database.journal_mode == "wal"
    assert store.schema_version == 5


def test_reopening_keeps_everything_and_does_not_migrate_twice(tmp_path: Path, run_job: RunJob, store: Store) -> None:
    run_job(hub_id(1), None)
    store.close()
    again = Store(store.path, ACTOR)
    assert again.schema_version == 5
    assert len(again.jobs()) == 1
    again.close()


def test_a_version_1_database_gains_the_flash_step_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    db = sqlite3.connect(path, isolation_level=None)
    for statement in statements(MIGRATIONS[0]):
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.execute(
        "INSERT INTO jobs (chf_id, order_ref, slot, state, firmware_before, started_at, operator, facility) "
        "VALUES (?, NULL, 'A1', 'interrupted', '01000000', '2026-11-30T00:00:00Z', 'op', 'fac')",
        (hub_id(1),),
    )
    db.close()
    store = Store(path, ACTOR)
    assert store.schema_version == 5
    (job,) = store.jobs()
    assert (job.chf_id, job.state, job.step_target) == (hub_id(1), "interrupted", None)
    assert store.flash_step(job.id) is None
    step = FlashStep("01020000", "ab" * 32, "cd" * 32)
    entry = store.begin_step(job.id, step, size=4096)
    assert store.flash_step(job.id) == step
    assert entry.kind == "transfer_started"
    assert entry.data["upgrade_image_sha256"] == "cd" * 32
    store.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        Store(path, ACTOR)


def test_audit_is_append_only_in_the_database(store: Store, run_job: RunJob) -> None:
    run_job(hub_id(1), None)
    db = beside(store)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE audit SET kind = 'x' WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM audit WHERE seq = 1")
    db.close()
