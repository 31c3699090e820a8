"""The audit log: checkpoints signed as the chain grows, and a chain that verifies."""

from __future__ import annotations

from station.audit import verify_chain
from station.store import Store
from tests.station.conftest import RunJob, hub_id


def test_checkpoints_are_written_and_verify(store: Store, run_job: RunJob) -> None:
    for n in range(4):
        run_job(hub_id(n), None)
    assert store.checkpoint() is not None
    report = verify_chain(store.audit_entries(), store.audit_checkpoints(), store.public_key)
    assert report.ok, report.problem
    assert report.checkpoints >= 3
