"""The store: one transaction per state change, invariants held by the database itself, migrations."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from station.audit import verify_chain
from station.outcome import Outcome
from station.store import FlashStep, Store, StoreError
from station.store.schema import MIGRATIONS, statements
from station.store.sqlite import SqliteDatabase
from tests.station.conftest import ACTOR, RunJob, hub_id


def beside(store: Store) -> sqlite3.Connection:
    """The store's file through a connection of its own: what any code could try below the store's parts (the
    database itself must refuse it)."""
    return sqlite3.connect(store.path, isolation_level=None)


def test_wal_mode_and_schema_version(store: Store) -> None:
    assert isinstance(store.database, SqliteDatabase)
    assert store.database.journal_mode == "wal"
    assert store.schema_version == 3


def test_reopening_keeps_everything_and_does_not_migrate_twice(tmp_path: Path, run_job: RunJob, store: Store) -> None:
    run_job(hub_id(1), None)
    store.close()
    again = Store(store.path, ACTOR)
    assert again.schema_version == 3
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
    assert store.schema_version == 3
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


def test_finish_job_writes_state_audit_outbox_and_charge_together(store: Store, run_job: RunJob) -> None:
    job = run_job(hub_id(1), None)
    assert job.state == "final"
    assert job.outcome == "REFLASHED"
    (message,) = store.outbox.messages()
    payload = json.loads(message.payload)
    assert payload["audit_hash"] == job.audit_hash
    last = list(store.audit_entries())[-1]
    assert (last.kind, last.hash) == ("job_finished", job.audit_hash)
    assert last.data["outcome"] == "REFLASHED"


def test_a_failing_report_builder_writes_nothing(store: Store) -> None:
    job_id = store.start_job(chf_id=hub_id(2), gpf_id=None, order_ref=None, slot="A1", identity={})
    audit_before = len(list(store.audit_entries()))

    def broken(*_: object) -> dict[str, object]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.finish_job(
            job_id, outcome=Outcome.FAILED, reason="X", firmware_after=None, target_version=None, image_sha256=None,
            hub_sha256=None, charge_pence=0, currency="GBP", report=broken,
        )  # fmt: skip
    assert store.job(job_id).state == "running"
    assert store.outbox.messages() == []
    assert len(list(store.audit_entries())) == audit_before


def test_no_hub_gets_two_final_outcomes_in_one_order(store: Store, run_job: RunJob) -> None:
    from station.orders import OrderRequest

    store.import_order(OrderRequest("ORD-1", "dcc", "SUPPLIER-A", "North", [(hub_id(1), 2)], "x.csv", "0" * 64))
    run_job(hub_id(1), "ORD-1")
    with pytest.raises(StoreError, match="already has outcome REFLASHED in order ORD-1"):
        run_job(hub_id(1), "ORD-1")
    job = store.jobs(order_ref="ORD-1")[0]
    with pytest.raises(StoreError, match="already has outcome"):
        store.finish_job(
            job.id, outcome=Outcome.FAILED, reason="X", firmware_after=None, target_version=None,
            image_sha256=None, hub_sha256=None, charge_pence=0, currency="GBP", report=lambda *a: {},
        )  # fmt: skip
    # The database enforces it too, whatever code tries.
    db = beside(store)
    with pytest.raises(sqlite3.IntegrityError):
        db.execute(
            "INSERT INTO jobs (chf_id, order_ref, slot, state, outcome, started_at, operator, facility) "
            "VALUES (?, 'ORD-1', 'A1', 'final', 'FAILED', 'now', 'op', 'f')",
            (hub_id(1),),
        )
    db.close()


def test_interrupted_job_is_resumed_not_duplicated(store: Store) -> None:
    job_id = store.start_job(chf_id=hub_id(3), gpf_id=None, order_ref=None, slot="A1", identity={})
    store.begin_attempt(job_id)
    assert store.interrupt_running_jobs() == [job_id]
    assert store.job(job_id).state == "interrupted"
    (attempt,) = store.job_ledger.attempts(job_id)
    assert attempt.result == "interrupted"
    again = store.start_job(chf_id=hub_id(3), gpf_id=None, order_ref=None, slot="B2", identity={})
    assert again == job_id
    assert store.job(job_id).slot == "B2"
    assert [e.kind for e in store.audit_entries()][-1] == "job_resumed"


def test_audit_is_append_only_in_the_database(store: Store, run_job: RunJob) -> None:
    run_job(hub_id(1), None)
    db = beside(store)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE audit SET kind = 'x' WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM audit WHERE seq = 1")
    db.close()


def test_checkpoints_are_written_and_verify(store: Store, run_job: RunJob) -> None:
    for n in range(4):
        run_job(hub_id(n), None)
    assert store.checkpoint() is not None
    report = verify_chain(store.audit_entries(), store.audit_checkpoints(), store.public_key)
    assert report.ok, report.problem
    assert report.checkpoints >= 3


@pytest.mark.parametrize("missing", ["operator", "facility_approval"])
def test_station_refuses_config_without_operator_or_facility(tmp_path: Path, missing: str) -> None:
    from station.config import ConfigError, load_config

    fields = {"id": '"st-1"', "region": '"North"', "operator": '"op-1"', "facility_approval": '"SSC-1"'}
    fields.pop(missing)
    body = "\n".join(f"{k} = {v}" for k, v in fields.items())
    path = tmp_path / "station.toml"
    path.write_text(f'[station]\n{body}\n[catalog]\nfolder = "c"\nauthority_key = "a.pub"\n')
    with pytest.raises(ConfigError, match=rf"station\.toml: station\.{missing}: Field required"):
        load_config(path)


def test_a_misspelt_key_is_named_with_the_key_it_was_meant_to_be(tmp_path: Path) -> None:
    from station.config import ConfigError, load_config

    path = tmp_path / "station.toml"
    path.write_text(
        '[station]\nid = "st-1"\nregion = "North"\noperater = "op-1"\nfacility_approval = "SSC-1"\n'
        '[catalog]\nfolder = "c"\nauthority_key = "a.pub"\n'
    )
    with pytest.raises(
        ConfigError, match=r"station\.toml: station\.operater: unknown key 'operater'; did you mean 'operator'\?"
    ):
        load_config(path)
