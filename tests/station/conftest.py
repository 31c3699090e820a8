"""A real on-disk store for station tests, and a way to run a job's records through it."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware_catalog.hub import format_eui64
from firmware_catalog.keys import generate_key
from station.audit import AuditEntry
from station.live_state import LiveState, StationSnapshot, Totals
from station.orders import OrderRequest
from station.outcome import Outcome
from station.slot import SlotSnapshot
from station.store import Actor, JobRecord, Store

ACTOR = Actor(station="st-north-01", operator="op-0042", facility="SSC-TRIAGE-2026-017")


def hub_id(n: int) -> str:
    return format_eui64(0x00DB123400000000 | n)


def import_and_scan_in(store: Store, request: OrderRequest) -> None:
    """An order imported and its box of hubs scanned in, as the operator does before the bench runs (a hub is
    flashed only once it was scanned in: `[station] require_scan_in`)."""
    store.import_order(request)
    for chf_id, _ in request.hubs:
        assert store.receive(request.ref, chf_id)


def live_state_of(views: Callable[[], list[dict[str, Any]]]) -> LiveState:
    """A live state whose slots are `views()` (name, state, chf_id, bytes...), as a bench would publish them; the
    test calls `changed()` when it changes a view."""

    def build() -> StationSnapshot:
        slots = [SlotSnapshot(**{"name": v["slot"], **{k: x for k, x in v.items() if k != "slot"}}) for v in views()]
        totals = Totals(hubs=0, outcomes={}, hubs_per_hour=0, bytes_per_s=0.0, uptime_s=0.0)
        return StationSnapshot(station="test", stopped=False, updated_at=0.0, slots=slots, totals=totals)

    return LiveState(build)


def simple_report(job: JobRecord, entry: AuditEntry, message_id: str) -> dict[str, Any]:
    return {"message_id": message_id, "chf_id": job.chf_id, "outcome": job.outcome, "audit_hash": entry.hash}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "state/station.db", ACTOR, key=generate_key(), checkpoint_every=5)
    yield s
    s.close()


RunJob = Callable[..., JobRecord]


@pytest.fixture
def run_job(store: Store) -> RunJob:
    def run(
        chf_id: str,
        order_ref: str | None,
        outcome: Outcome = Outcome.REFLASHED,
        *,
        before: str = "01000000",
        after: str | None = "01020000",
        charge: int = 980,
        slot: str = "A1",
    ) -> JobRecord:
        identity = {"manufacturer": "121D", "model": "0000", "hardware_version": "1200", "firmware_version": before}
        job_id = store.start_job(chf_id=chf_id, gpf_id=None, order_ref=order_ref, slot=slot, identity=identity).id
        attempt = store.begin_attempt(job_id)
        store.end_attempt(job_id, attempt, "ok", "", 4096)
        return store.finish_job(
            job_id,
            outcome=outcome,
            reason="OK" if outcome is Outcome.REFLASHED else outcome.value,
            firmware_after=after,
            target_version=after,
            image_sha256="ab" * 32,
            hub_sha256="ab" * 32,
            charge_pence=charge,
            currency="GBP",
            report=simple_report,
        )

    return run


def store_contents(path: Path) -> str:
    """A digest of what a store holds (its SQL dump, read-only), not of its file bytes: SQLite moves pages between
    the WAL and the database file whenever a connection closes, which changes the bytes and nothing stored."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return hashlib.sha256("\n".join(db.iterdump()).encode()).hexdigest()
    finally:
        db.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs of the test's own, for a disk that really fills (skips where it cannot be mounted: not root)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@contextlib.contextmanager
def serve_pty_hub(trust_key: Path, state: Path, fault: str = "") -> Iterator[str]:
    """A simulated hub served on a real pty by `reflash sim hub --pty` in a process of its own; yields the path the
    station opens, and stops the process after."""
    process = subprocess.Popen(
        [sys.executable, "-c", "from station.cli import main; main()", "sim", "hub", "--pty",
         "--trust", f"121D={trust_key}", "--state", str(state), *(["--fault", fault] if fault else [])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        path = process.stdout.readline().decode().strip()
        assert path.startswith("/dev/"), process.stderr.read() if process.stderr else path
        yield path
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
        for stream in (process.stdout, process.stderr):
            if stream:
                stream.close()
