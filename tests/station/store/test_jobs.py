"""Jobs: one transaction per state change, the outcome written whole or not at all, one final outcome per order."""

from __future__ import annotations

import json
import sqlite3

import pytest

from station.outcome import Outcome
from station.store import Store, StoreError
from tests.station.conftest import RunJob, hub_id
from tests.station.store.conftest import beside


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
    job_id = store.start_job(chf_id=hub_id(2), gpf_id=None, order_ref=None, slot="A1", identity={}).id
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
    job_id = store.start_job(chf_id=hub_id(3), gpf_id=None, order_ref=None, slot="A1", identity={}).id
    store.begin_attempt(job_id)
    assert store.interrupt_running_jobs() == [job_id]
    assert store.job(job_id).state == "interrupted"
    (attempt,) = store.job_ledger.attempts(job_id)
    assert attempt.result == "interrupted"
    again = store.start_job(chf_id=hub_id(3), gpf_id=None, order_ref=None, slot="B2", identity={})
    assert again.id == job_id
    assert again.resumed
    assert store.job(job_id).slot == "B2"
    assert [e.kind for e in store.audit_entries()][-1] == "job_resumed"
