"""Jobs: one hub's visit to the bench, from identification to its one final outcome, with its attempts and, for a
hub an order names, its charge line.

`finish` is the outcome transaction: the job's final state, the `processed` custody event, the `job_finished` audit
entry, the hub-result message for the DSP and the charge line, in one COMMIT or not at all. A hub has at most one
final outcome per order, and a job left running by a crash is marked interrupted, never done.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from station.audit import AuditEntry
from station.outcome import Interruption, Outcome
from station.store.custody import CustodyEvent
from station.store.unit_of_work import StoreError

if TYPE_CHECKING:
    from station.store.audit_log import AuditLog
    from station.store.custody import Custody
    from station.store.database import Row, Session
    from station.store.outbox import Outbox
    from station.store.unit_of_work import UnitOfWork

__all__ = ["Attempt", "Charge", "FlashStep", "JobLedger", "JobRecord", "JobStart", "JobState"]


class JobState(StrEnum):
    RUNNING = "running"
    INTERRUPTED = "interrupted"  # stopped without an outcome; resumed when its hub is seen again
    FINAL = "final"  # has its outcome


@dataclass(frozen=True)
class JobStart:
    """A job begun for a hub on a slot, or an interrupted one of the same hub and order taken up again."""

    id: int
    resumed: bool


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
    state: JobState
    outcome: Outcome | None
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


_JOB_FIELDS = tuple(field.name for field in dataclasses.fields(JobRecord))


def _job(row: Row) -> JobRecord:
    values = {name: row[name] for name in _JOB_FIELDS}
    values["state"] = JobState(values["state"])
    values["outcome"] = None if values["outcome"] is None else Outcome(values["outcome"])
    return JobRecord(**values)


@dataclass(frozen=True)
class Attempt:
    """One try at a job's transfer; `result` is None while it runs."""

    job_id: int
    number: int
    started_at: str
    finished_at: str | None
    result: str | None
    detail: str | None
    bytes_sent: int


@dataclass(frozen=True)
class Charge:
    """What the CSP charges the order for one hub's outcome."""

    order_ref: str
    chf_id: str
    job_id: int
    outcome: Outcome
    amount_pence: int
    currency: str


class JobLedger:
    """Jobs, their attempts and their charges."""

    def __init__(self, work: UnitOfWork, audit_log: AuditLog, custody: Custody, outbox: Outbox) -> None:
        self._work = work
        self._audit_log = audit_log
        self._custody = custody
        self._outbox = outbox

    # -- state changes -----------------------------------------------------------------------------------------

    def interrupt_running(self) -> list[int]:
        """At start: jobs left running by a crash are marked interrupted, never done. Returns their ids."""
        with self._work.transaction() as session:
            ids = [row["id"] for row in session.execute("SELECT id FROM jobs WHERE state = 'running'").fetchall()]
            for job_id in ids:
                session.execute("UPDATE jobs SET state = 'interrupted' WHERE id = ?", (job_id,))
                session.execute(
                    "UPDATE attempts SET finished_at = ?, result = 'interrupted' "
                    "WHERE job_id = ? AND finished_at IS NULL",
                    (self._work.now(), job_id),
                )
                self._audit_log.append(
                    session,
                    "job_interrupted",
                    {"job_id": job_id, "cause": "station restarted", "code": Interruption.STATION_STOPPING.value},
                )
            return ids

    def start(self, *, chf_id: str, gpf_id: str | None, order_ref: str | None, slot: str,
              identity: dict[str, Any]) -> JobStart:  # fmt: skip
        """A hub identified on a slot. Resumes the hub's interrupted job in this order if there is one."""
        in_order, order_params = ("order_ref IS NULL", ()) if order_ref is None else ("order_ref = ?", (order_ref,))
        with self._work.transaction() as session:
            final = session.execute(
                f"SELECT id, outcome FROM jobs WHERE chf_id = ? AND {in_order} AND state = 'final'",  # noqa: S608 -- a fixed fragment
                (chf_id, *order_params),
            ).fetchone()
            if final is not None and order_ref is not None:
                raise StoreError(f"hub {chf_id} already has outcome {final['outcome']} in order {order_ref}")
            prior = session.execute(
                f"SELECT id FROM jobs WHERE chf_id = ? AND {in_order} AND state IN ('interrupted', 'running') "  # noqa: S608 -- a fixed fragment
                "ORDER BY id DESC LIMIT 1",
                (chf_id, *order_params),
            ).fetchone()
            now = self._work.now()
            actor = self._work.actor
            if prior is not None:
                job_id = int(prior["id"])
                session.execute("UPDATE jobs SET state = 'running', slot = ? WHERE id = ?", (slot, job_id))
                resumed = True
            else:
                row = session.execute(
                    "INSERT INTO jobs (chf_id, gpf_id, order_ref, slot, state, manufacturer, model, hardware_version, "
                    "firmware_before, started_at, operator, facility) VALUES (?,?,?,?, 'running', ?,?,?,?,?,?,?) "
                    "RETURNING id",
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
                        actor.operator,
                        actor.facility,
                    ),
                ).fetchone()
                job_id = int(row["id"])
                resumed = False
            self._custody.record(session, chf_id, order_ref, CustodyEvent.ON_BENCH, slot=slot, at=now)
            self._audit_log.append(
                session,
                "job_resumed" if resumed else "job_started",
                {"job_id": job_id, "slot": slot, "order_ref": order_ref, "identity": identity},
            )
            return JobStart(job_id, resumed)

    def suspend(self, job_id: int, cause: str, **data: Any) -> None:
        """A job that stops without an outcome (the station is stopping, no catalog is in force, another hub is on
        the jig): it is marked interrupted, never done, and is resumed when its hub is seen again. `data` (a reason
        code, the hubs involved) goes into the audit entry."""
        with self._work.transaction() as session:
            session.execute("UPDATE jobs SET state = 'interrupted' WHERE id = ? AND state = 'running'", (job_id,))
            session.execute(
                "UPDATE attempts SET finished_at = ?, result = 'interrupted', detail = ? "
                "WHERE job_id = ? AND finished_at IS NULL",
                (self._work.now(), cause, job_id),
            )
            self._audit_log.append(session, "job_interrupted", {"job_id": job_id, "cause": cause, **data})

    def begin_step(self, job_id: int, step: FlashStep, **data: Any) -> AuditEntry:
        """A flash step begins (before the first byte goes to the hub): the job remembers its target and envelope,
        and the audit records `transfer_started`, in one transaction."""
        with self._work.transaction() as session:
            session.execute(
                "UPDATE jobs SET step_target = ?, step_image_sha256 = ?, step_upgrade_image_sha256 = ? WHERE id = ?",
                (step.target, step.image_sha256, step.upgrade_image_sha256, job_id),
            )
            return self._audit_log.append(
                session,
                "transfer_started",
                {
                    "job_id": job_id,
                    "target": step.target,
                    "image_sha256": step.image_sha256,
                    "upgrade_image_sha256": step.upgrade_image_sha256,
                    **data,
                },
            )

    def begin_attempt(self, job_id: int, detail: str = "") -> int:
        with self._work.transaction() as session:
            query = "SELECT COALESCE(MAX(number), 0) + 1 FROM attempts WHERE job_id = ?"
            number = int(session.execute(query, (job_id,)).fetchone()[0])
            session.execute(
                "INSERT INTO attempts (job_id, number, started_at, detail) VALUES (?,?,?,?)",
                (job_id, number, self._work.now(), detail),
            )
            session.execute("UPDATE jobs SET attempts = ? WHERE id = ?", (number, job_id))
            self._audit_log.append(session, "attempt_started", {"job_id": job_id, "attempt": number, "detail": detail})
            return number

    def end_attempt(self, job_id: int, number: int, result: str, detail: str, bytes_sent: int) -> None:
        with self._work.transaction() as session:
            session.execute(
                "UPDATE attempts SET finished_at = ?, result = ?, detail = ?, bytes_sent = ? "
                "WHERE job_id = ? AND number = ?",
                (self._work.now(), result, detail, bytes_sent, job_id, number),
            )
            self._audit_log.append(
                session,
                "attempt_ended",
                {"job_id": job_id, "attempt": number, "result": result, "detail": detail, "bytes_sent": bytes_sent},
            )

    def record_event(self, job_id: int, kind: str, **data: Any) -> AuditEntry:
        """A job step worth its own audit entry: decision, transfer start and end, verify, activate, read back."""
        with self._work.transaction() as session:
            return self._audit_log.append(session, kind, {"job_id": job_id, **data})

    def finish(
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
        with self._work.transaction() as session:
            row = session.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise StoreError(f"no job {job_id}")
            job = _job(row)
            if job.state == JobState.FINAL:
                raise StoreError(f"job {job_id} already has outcome {job.outcome}")
            now = self._work.now()
            session.execute(
                "UPDATE jobs SET state = 'final', outcome = ?, reason = ?, firmware_after = ?, target_version = ?, "
                "image_sha256 = ?, hub_sha256 = ?, upgrade_image_sha256 = ?, finished_at = ? WHERE id = ?",
                (
                    outcome.value,
                    reason,
                    firmware_after,
                    target_version,
                    image_sha256,
                    hub_sha256,
                    upgrade_image_sha256,
                    now,
                    job_id,
                ),
            )
            self._custody.record(session, job.chf_id, job.order_ref, CustodyEvent.PROCESSED, slot=job.slot, at=now)
            entry = self._audit_log.append(
                session,
                "job_finished",
                {
                    "job_id": job_id,
                    "chf_id": job.chf_id,
                    "order_ref": job.order_ref,
                    "outcome": outcome.value,
                    "reason": reason,
                    "firmware_before": job.firmware_before,
                    "firmware_after": firmware_after,
                    "image_sha256": image_sha256,
                    "upgrade_image_sha256": upgrade_image_sha256,
                    "hub_sha256": hub_sha256,
                },
            )
            # The station's result counter (contract 1.1): assigned with the outcome, so it never has a gap.
            sequence = session.execute("SELECT COALESCE(MAX(result_sequence), 0) + 1 FROM jobs").fetchone()[0]
            session.execute(
                "UPDATE jobs SET audit_hash = ?, result_sequence = ? WHERE id = ?", (entry.hash, sequence, job_id)
            )
            record = _job(session.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())
            message_id = self._outbox.new_message_id()
            payload = report(record, entry, message_id)
            self._outbox.enqueue(session, "hub_result", payload, message_id=message_id, job_id=job_id, created_at=now)
            if job.order_ref is not None:
                session.execute(
                    "INSERT INTO charges (order_ref, chf_id, job_id, outcome, amount_pence, currency) "
                    "VALUES (?,?,?,?,?,?)",
                    (job.order_ref, job.chf_id, job_id, outcome.value, charge_pence, currency),
                )
            return record

    def resend_results(self, first: int, last: int, asked_by: str) -> int:
        """A DSP asked for results `first`..`last` (by sequence) again: every one this station holds is queued to be
        published now, whatever its state, and the request is one audit entry. Returns how many were queued."""
        with self._work.transaction() as session:
            job_ids = [
                int(row["id"])
                for row in session.execute(
                    "SELECT id FROM jobs WHERE result_sequence BETWEEN ? AND ? ORDER BY id", (first, last)
                ).fetchall()
            ]
            queued = self._outbox.requeue(session, job_ids)
            self._audit_log.append(
                session,
                "resend_requested",
                {"from_sequence": first, "to_sequence": last, "by": asked_by, "queued": queued},
            )
            return queued

    # -- reads -------------------------------------------------------------------------------------------------

    def job(self, job_id: int) -> JobRecord:
        row = self._work.reader().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
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
        return [_job(row) for row in self._work.reader().execute(f"SELECT * FROM jobs{where} ORDER BY id", params)]  # noqa: S608

    def flash_step(self, job_id: int) -> FlashStep | None:
        """The last flash step the job began, if any."""
        job = self.job(job_id)
        if job.step_target is None or job.step_image_sha256 is None or job.step_upgrade_image_sha256 is None:
            return None
        return FlashStep(job.step_target, job.step_image_sha256, job.step_upgrade_image_sha256)

    def latest(self, chf_id: str) -> JobRecord | None:
        """The hub's most recent job, in any order or none."""
        row = (
            self._work.reader()
            .execute("SELECT * FROM jobs WHERE chf_id = ? ORDER BY id DESC LIMIT 1", (chf_id,))
            .fetchone()
        )
        return None if row is None else _job(row)

    def final(self, chf_id: str, order_ref: str, session: Session | None = None) -> JobRecord | None:
        """The hub's job with an outcome in the order, if it has one."""
        row = (
            (session or self._work.reader())
            .execute("SELECT * FROM jobs WHERE chf_id = ? AND order_ref = ? AND state = 'final'", (chf_id, order_ref))
            .fetchone()
        )
        return None if row is None else _job(row)

    def final_count(self, order_ref: str) -> int:
        """How many hubs have an outcome in the order."""
        row = (
            self._work.reader()
            .execute("SELECT COUNT(*) FROM jobs WHERE order_ref = ? AND state = 'final'", (order_ref,))
            .fetchone()
        )
        return int(row[0])

    def outcomes_on(self, day: date) -> dict[str, int]:
        """Hubs finished on a UTC day, by outcome (times are stored as UTC text, so text order is time order)."""
        rows = self._work.reader().execute(
            "SELECT outcome, COUNT(*) AS n FROM jobs WHERE state = 'final' AND finished_at >= ? AND finished_at < ? "
            "GROUP BY outcome ORDER BY outcome",
            (day.isoformat(), (day + timedelta(days=1)).isoformat()),
        )
        return {row["outcome"]: int(row["n"]) for row in rows}

    def attempts(self, job_id: int | None = None) -> list[Attempt]:
        """The job's attempts in order (every job's, by job, without `job_id`)."""
        reader = self._work.reader()
        rows = (
            reader.execute("SELECT * FROM attempts ORDER BY job_id, number")
            if job_id is None
            else reader.execute("SELECT * FROM attempts WHERE job_id = ? ORDER BY number", (job_id,))
        )
        return [
            Attempt(
                row["job_id"],
                row["number"],
                row["started_at"],
                row["finished_at"],
                row["result"],
                row["detail"],
                row["bytes_sent"],
            )
            for row in rows
        ]

    def charges(self, *, order_ref: str | None = None) -> list[Charge]:
        """The charge lines (of one order), in the order they were made."""
        reader = self._work.reader()
        rows = (
            reader.execute("SELECT * FROM charges ORDER BY job_id")
            if order_ref is None
            else reader.execute("SELECT * FROM charges WHERE order_ref = ? ORDER BY job_id", (order_ref,))
        )
        return [
            Charge(
                row["order_ref"],
                row["chf_id"],
                row["job_id"],
                Outcome(row["outcome"]),
                row["amount_pence"],
                row["currency"],
            )
            for row in rows
        ]
