"""The roster: PINs kept only as scrypt with a salt of their own, a lockout after five wrong PINs for 15 minutes,
tokens kept as SHA-256 and refused once revoked, and every change an audit entry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from station.outcome import Outcome
from station.store import Role, SignInRefused, Store, StoreError
from station.store.operators import MAX_FAILURES, SCRYPT_N, hash_pin, pin_matches
from tests.station.conftest import ACTOR, RunJob


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_a_pin_is_kept_as_salted_scrypt_with_its_parameters() -> None:
    one, two = hash_pin("2468"), hash_pin("2468")
    assert one != two  # a salt of its own
    assert one.startswith(f"scrypt${SCRYPT_N}$8$1$")
    assert "2468" not in one
    assert pin_matches("2468", one)
    assert not pin_matches("2469", one)


def test_five_wrong_pins_lock_out_for_fifteen_minutes(tmp_path: Path) -> None:
    clock = Clock()
    store = Store(tmp_path / "s.db", ACTOR, clock=clock)
    store.roster.add_operator("olive", Role.OPERATOR, "2468")
    for _ in range(4):
        with pytest.raises(SignInRefused, match="wrong PIN"):
            store.roster.sign_in("olive", "0000")
    assert store.roster.sign_in("olive", "2468").role is Role.OPERATOR  # a success resets the count
    for _ in range(5):
        with pytest.raises(SignInRefused):
            store.roster.sign_in("olive", "0000")
    with pytest.raises(SignInRefused, match="locked out"):
        store.roster.sign_in("olive", "2468")
    clock.now += timedelta(minutes=15, seconds=1)
    assert store.roster.sign_in("olive", "2468").id == "olive"
    kinds = [entry.kind for entry in store.audit_entries()]
    assert kinds.count("operator_locked_out") == 1
    assert kinds.count("operator_signed_in") == 2
    store.close()


def test_a_badge_names_its_operator_and_is_kept_only_as_a_hash(store: Store) -> None:
    store.roster.add_operator("olive", Role.OPERATOR, "2468", badge="BADGE-000417")
    assert store.roster.sign_in("BADGE-000417", "2468").id == "olive"
    with pytest.raises(SignInRefused, match="unknown operator or wrong PIN"):
        store.roster.sign_in("BADGE-000417", "1111")  # the PIN is still asked for
    with pytest.raises(SignInRefused, match="unknown operator or wrong PIN"):
        store.roster.sign_in("BADGE-999999", "2468")
    raw = store.database.reader().execute("SELECT * FROM operators").fetchall()
    assert "BADGE-000417" not in str([tuple(row) for row in raw])
    with pytest.raises(StoreError, match="olive's already"):
        store.roster.add_operator("sam", Role.SUPERVISOR, "135790", badge="BADGE-000417")
    store.roster.add_operator("sam", Role.SUPERVISOR, "135790")
    store.roster.set_badge("sam", "BADGE-000418")
    assert store.roster.sign_in("BADGE-000418", "135790").id == "sam"
    store.roster.set_badge("sam", None)
    with pytest.raises(SignInRefused):
        store.roster.sign_in("BADGE-000418", "135790")
    with pytest.raises(ValueError, match="badge code"):
        store.roster.set_badge("sam", " x")
    entries = [(e.kind, e.data) for e in store.audit_entries()]
    assert ("operator_signed_in", {"operator": "olive", "via": "bench_page", "with": "badge"}) in entries
    # Neither the badge's code nor anything typed for an unknown identity is audited.
    assert "BADGE-" not in str(entries)


def test_attempts_checked_together_cannot_pass_the_lockout(tmp_path: Path) -> None:
    """The page checks PINs off the event loop, so attempts overlap: the count is kept when each is recorded."""
    store = Store(tmp_path / "s.db", ACTOR)
    store.roster.add_operator("olive", Role.OPERATOR, "2468")
    attempts = [store.roster.begin_sign_in("olive") for _ in range(MAX_FAILURES + 1)]
    for attempt in attempts[:MAX_FAILURES]:
        with pytest.raises(SignInRefused):
            store.roster.finish_sign_in(attempt, attempt.pin_matches("0000"))
    # The sixth was read before the lockout was written, and its PIN is right: it is refused all the same.
    with pytest.raises(SignInRefused, match="locked out"):
        store.roster.finish_sign_in(attempts[-1], attempts[-1].pin_matches("2468"))
    store.close()


def test_tokens_are_kept_hashed_and_refused_once_revoked(store: Store) -> None:
    token = store.roster.add_token("line-1", Role.OPERATOR)
    found = store.roster.token(token)
    assert found is not None
    assert (found.name, found.role) == ("line-1", Role.OPERATOR)
    assert token not in str(list(store.database.reader().execute("SELECT * FROM api_tokens").fetchall()[0]))
    store.roster.revoke_token("line-1")
    assert store.roster.token(token) is None
    with pytest.raises(StoreError):
        store.roster.revoke_token("line-1")
    with pytest.raises(ValueError, match="not a name"):
        store.roster.add_token("line 1/#", Role.OPERATOR)


def test_roster_changes_are_audited_and_pins_checked(store: Store) -> None:
    with pytest.raises(ValueError, match="4 to 12 digits"):
        store.roster.add_operator("olive", Role.OPERATOR, "12")
    store.roster.add_operator("sam", Role.SUPERVISOR, "135790")
    with pytest.raises(StoreError, match="exists already"):
        store.roster.add_operator("sam", Role.OPERATOR, "1111")
    store.roster.remove_operator("sam")
    with pytest.raises(SignInRefused):
        store.roster.sign_in("sam", "135790")
    kinds = [entry.kind for entry in store.audit_entries()]
    assert kinds == ["operator_added", "operator_removed", "sign_in_refused"]


def test_records_written_while_acting_as_an_operator_name_them(store: Store) -> None:
    with store.acting_as("olive"):
        store.audit("scan")
    store.audit("after")
    entries = list(store.audit_entries())
    assert [(e.kind, e.operator) for e in entries] == [("scan", "olive"), ("after", ACTOR.operator)]


def test_a_supervisor_releases_a_hub_held_as_unexpected_once(store: Store, run_job: RunJob) -> None:
    hub = "00-DB-12-34-00-00-00-09"
    with pytest.raises(StoreError, match="not held as UNEXPECTED"):
        store.release(hub)
    job = run_job(hub, None, Outcome.UNEXPECTED, after=None, charge=0)
    with store.acting_as("sam"):
        assert store.release(hub.replace("-", "").lower()) == job.id
    with pytest.raises(StoreError, match="already released"):
        store.release(hub)
    (entry,) = [e for e in store.audit_entries() if e.kind == "hub_released"]
    assert (entry.operator, entry.data) == ("sam", {"chf_id": hub, "job_id": job.id, "outcome": "UNEXPECTED"})
