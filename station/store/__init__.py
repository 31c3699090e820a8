"""The store: the station's durable state, and the only writer of it.

Every state change is one transaction, and every transaction that changes what happened to a hub also appends its
audit entry, so the record and the audit trail can never disagree. A job's final state, its custody event, its audit
entry, its outbound report message and its charge line are written together (`finish_job`).

The store is a package of parts, one noun each, sharing one `UnitOfWork` (one database, one transaction at a time):

    schema         the SQLite tables and their migrations (`MIGRATIONS`, one transaction per version)
    sqlite         the SQLite `Database`: the connection, its pragmas, BEGIN IMMEDIATE / COMMIT / ROLLBACK
    unit_of_work   the shared transaction, the actor and clock, the crash points, whether the store can write
    audit_log      the hash chain and its signed checkpoints
    catalog_pin    the catalog rollback floor and the record of every catalog offered
    custody        where each hub has been (received, on the bench, processed, dispatched)
    orders         orders and the hubs they name; scan-in, scan-out, close
    jobs           jobs, their attempts and charges; the outcome transaction
    outbox         messages for the DSP, from their transaction to the DSP's ack
    operators      the roster: operators who sign in with a PIN (scrypt), API tokens (SHA-256), their roles
    database       the seam: what a part may ask of a database engine (below)
    crash_left_state  states only a crash leaves, made on purpose for tests; the station never calls it

A part that composes others passes its `Session` down (`AuditLog.append(session, ...)`, `Outbox.enqueue(session,
...)`, `Custody.record(session, ...)`), so the composition stays one COMMIT. Parts return frozen records with enums
for their states (`JobRecord`, `OrderRecord`, `OutboxRow`, ...), never database rows; what a report needs is a named
read query on a part, never SQL from outside the package. `Store` is the facade the station uses; its parts are its
attributes (`store.job_ledger`, `store.order_book`, ...).

The seam for another database engine is `station.store.database`: the parts run their SQL through `Session` and
`Database`, in a dialect SQLite and PostgreSQL share, with `?` placeholders. A PostgreSQL backend (one database for
several stations of a site) is one new module: a `Database` that opens its connection, rewrites `?` to `%s` in its
`Session`, returns rows readable by column name, names its "cannot write now" errors (`write_errors`), and brings its
own DDL and migrations beside `schema`; then `Store.over(database, actor)`. No part changes. Each station keeps its
own chain, counters and rows there by having a schema of its own in that database (the backend sets `search_path`
to it), since the parts' SQL names tables, not stations.

The store depends on nothing above it: the standard library, `cryptography`, `firmware_catalog` and the station's
own value modules (`station.audit`, `station.outcome`, `station.crash_point`, `station.identifier`); a test
holds it to that.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from firmware_catalog.catalog import CatalogPin
from station.audit import AuditEntry, Checkpoint
from station.outcome import Outcome
from station.store.audit_log import AuditLog
from station.store.catalog_pin import PinnedCatalog
from station.store.custody import Custody, CustodyEvent, CustodyRecord
from station.store.database import Database, Session
from station.store.jobs import Attempt, Charge, FlashStep, JobLedger, JobRecord, JobStart, JobState
from station.store.operators import ApiToken, Operator, Role, Roster, SignInAttempt, SignInRefused
from station.store.orders import NewOrder, OrderBook, OrderConflict, OrderKind, OrderProgress, OrderRecord, OrderState
from station.store.outbox import AUDIT_CHECKPOINT, Outbox, OutboxRow, OutboxState
from station.store.schema import MIGRATIONS
from station.store.sqlite import SqliteDatabase
from station.store.unit_of_work import Actor, StoreError, UnitOfWork, utc_now

__all__ = [
    "AUDIT_CHECKPOINT",
    "MIGRATIONS",
    "Actor",
    "ApiToken",
    "Attempt",
    "Charge",
    "CustodyEvent",
    "CustodyRecord",
    "FlashStep",
    "JobRecord",
    "JobStart",
    "JobState",
    "Operator",
    "OrderConflict",
    "OrderKind",
    "OrderProgress",
    "OrderRecord",
    "OrderState",
    "OutboxRow",
    "OutboxState",
    "Role",
    "SignInAttempt",
    "SignInRefused",
    "Store",
    "StoreError",
]


class Store:
    """The station's durable state. One instance per process; every method is one transaction."""

    def __init__(
        self,
        path: str | Path,
        actor: Actor,
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
        checkpoint_every: int = 100,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._assemble(SqliteDatabase(path), actor, key=key, checkpoint_every=checkpoint_every, clock=clock)

    @classmethod
    def over(
        cls,
        database: Database,
        actor: Actor,
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
        checkpoint_every: int = 100,
        clock: Callable[[], datetime] = utc_now,
    ) -> Store:
        """A store over another `Database` than the default SQLite file."""
        store = cls.__new__(cls)
        store._assemble(database, actor, key=key, checkpoint_every=checkpoint_every, clock=clock)
        return store

    def _assemble(self, database: Database, actor: Actor, *, key: ec.EllipticCurvePrivateKey | None,
                  checkpoint_every: int, clock: Callable[[], datetime]) -> None:  # fmt: skip
        self.database = database
        self.path = Path(database.where)
        self.actor = actor
        self.work = UnitOfWork(database, actor, clock)
        self.audit_log = AuditLog(self.work, key=key, checkpoint_every=checkpoint_every)
        self.pinned_catalog = PinnedCatalog(self.work, self.audit_log)
        self.custody = Custody(self.work)
        self.outbox = Outbox(self.work, self.audit_log)
        self.job_ledger = JobLedger(self.work, self.audit_log, self.custody, self.outbox)
        self.order_book = OrderBook(self.work, self.audit_log, self.custody, self.job_ledger, self.outbox)
        self.roster = Roster(self.work, self.audit_log)

    # -- the store as a whole -------------------------------------------------------------------------------------

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey | None:
        return self.audit_log.public_key

    @property
    def writable(self) -> bool:
        """False from a failed write (disk full, read-only, I/O error) until the next write that succeeds."""
        return self.work.writable

    @property
    def write_errors(self) -> tuple[type[Exception], ...]:
        """The errors a write raises when it cannot be done now (disk full, read-only, I/O error): callers that must
        go on (a slot, the reporter, the stop) catch these, whatever the engine."""
        return self.database.write_errors

    @property
    def schema_version(self) -> int:
        return self.database.schema_version

    def now(self) -> str:
        return self.work.now()

    def close(self) -> None:
        self.database.close()

    @contextmanager
    def acting_as(self, operator: str) -> Iterator[None]:
        """Records written inside name `operator` (the operator signed in at the bench page) instead of the
        configuration's. The store is used from one thread, and the calls inside are synchronous: nothing else
        writes while the actor is swapped."""
        configured = self.work.actor
        self.work.actor = dataclasses.replace(configured, operator=operator)
        try:
            yield
        finally:
            self.work.actor = configured

    # -- audit ----------------------------------------------------------------------------------------------------

    def audit(self, kind: str, **data: Any) -> AuditEntry:
        """Record an event that changes no other state (operator sign-in, configuration at start, a decision)."""
        return self.audit_log.record(kind, data)

    def checkpoint(self) -> int | None:
        """Sign the newest entry now (at shutdown, so the tail is covered); returns its sequence number."""
        return self.audit_log.checkpoint()

    def audit_entries(self, since: str | None = None) -> Iterator[AuditEntry]:
        return self.audit_log.entries(since)

    def anchor_checkpoints(self, message: Callable[[Checkpoint, str], dict[str, Any]]) -> None:
        """From now on, queue every checkpoint signed for the DSP (kind `audit_checkpoint`), in the transaction that
        signs it; `message(checkpoint, message_id)` makes its payload (the store does not know the contract)."""
        outbox = self.outbox

        def queue(session: Session, checkpoint: Checkpoint) -> None:
            message_id = outbox.new_message_id()
            outbox.enqueue(session, AUDIT_CHECKPOINT, message(checkpoint, message_id), message_id=message_id,
                           job_id=None, created_at=checkpoint.at)  # fmt: skip

        self.audit_log.on_checkpoint = queue

    def audit_checkpoints(self) -> list[Checkpoint]:
        return self.audit_log.checkpoints()

    # -- catalog --------------------------------------------------------------------------------------------------

    def catalog_pin(self) -> CatalogPin | None:
        return self.pinned_catalog.pin()

    def record_catalog(self, accepted: bool, code: str, message: str, pin: CatalogPin | None, folder: str) -> None:
        """Catalog offers go in the audit trail either way; an accepted one also becomes the rollback floor."""
        self.pinned_catalog.record(accepted, code, message, pin, folder)

    # -- orders and custody ---------------------------------------------------------------------------------------

    def import_order(self, request: NewOrder) -> None:
        """Store a request whole, or nothing: problems against what is already stored are listed like file ones."""
        self.order_book.import_order(request)

    def order(self, ref: str) -> OrderRecord:
        return self.order_book.order(ref)

    def open_order_for(self, chf_id: str) -> str | None:
        return self.order_book.open_order_for(chf_id)

    def scanned_in(self, chf_id: str, order_ref: str) -> bool:
        """Whether the hub was scanned in (received) to `order_ref`, which asked for it: custody has begun."""
        return self.custody.scanned_in(chf_id, order_ref)

    def receive(self, order_ref: str, chf_id: str) -> bool:
        """Scan-in. Returns whether the order asked for the hub; an unasked hub is recorded, and held."""
        return self.order_book.receive(order_ref, chf_id)

    def dispatch(self, order_ref: str, chf_id: str) -> str:
        """Scan-out. Only a hub with a final outcome in the order (or one that arrived unasked) may leave."""
        return self.order_book.dispatch(order_ref, chf_id)

    def release(self, chf_id: str) -> int:
        """A hub held as UNEXPECTED leaves the station (a supervisor's decision); returns its UNEXPECTED job."""
        return self.order_book.release(chf_id)

    def close_order(
        self, ref: str, summary: dict[str, Any], message: Callable[[str, str], dict[str, Any]] | None = None
    ) -> AuditEntry:
        """Close an order; `message(message_id, closed_at)` builds the order summary queued in the same transaction."""
        return self.order_book.close(ref, summary, message)

    # -- jobs -----------------------------------------------------------------------------------------------------

    def interrupt_running_jobs(self) -> list[int]:
        """At start: jobs left running by a crash are marked interrupted, never done. Returns their ids."""
        return self.job_ledger.interrupt_running()

    def start_job(self, *, chf_id: str, gpf_id: str | None, order_ref: str | None, slot: str,
                  identity: dict[str, Any]) -> JobStart:  # fmt: skip
        """A hub identified on a slot. Resumes the hub's interrupted job in this order if there is one (`resumed`)."""
        return self.job_ledger.start(chf_id=chf_id, gpf_id=gpf_id, order_ref=order_ref, slot=slot, identity=identity)

    def suspend_job(self, job_id: int, cause: str, **data: Any) -> None:
        """A job that stops without an outcome: marked interrupted, resumed when its hub is seen again."""
        self.job_ledger.suspend(job_id, cause, **data)

    def begin_step(self, job_id: int, step: FlashStep, **data: Any) -> AuditEntry:
        """A flash step begins (before the first byte goes to the hub), with its `transfer_started` audit entry."""
        return self.job_ledger.begin_step(job_id, step, **data)

    def flash_step(self, job_id: int) -> FlashStep | None:
        """The last flash step the job began, if any."""
        return self.job_ledger.flash_step(job_id)

    def latest_job(self, chf_id: str) -> JobRecord | None:
        """The hub's most recent job, in any order or none."""
        return self.job_ledger.latest(chf_id)

    def final_job(self, chf_id: str, order_ref: str) -> JobRecord | None:
        return self.job_ledger.final(chf_id, order_ref)

    def begin_attempt(self, job_id: int, detail: str = "") -> int:
        return self.job_ledger.begin_attempt(job_id, detail)

    def end_attempt(self, job_id: int, number: int, result: str, detail: str, bytes_sent: int) -> None:
        self.job_ledger.end_attempt(job_id, number, result, detail, bytes_sent)

    def record_event(self, job_id: int, kind: str, **data: Any) -> AuditEntry:
        """A job step worth its own audit entry: decision, transfer start and end, verify, activate, read back."""
        return self.job_ledger.record_event(job_id, kind, **data)

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
        return self.job_ledger.finish(
            job_id, outcome=outcome, reason=reason, firmware_after=firmware_after, target_version=target_version,
            image_sha256=image_sha256, hub_sha256=hub_sha256, upgrade_image_sha256=upgrade_image_sha256,
            charge_pence=charge_pence, currency=currency, report=report,
        )  # fmt: skip

    def job(self, job_id: int) -> JobRecord:
        return self.job_ledger.job(job_id)

    def jobs(self, *, order_ref: str | None = None, chf_id: str | None = None) -> list[JobRecord]:
        return self.job_ledger.jobs(order_ref=order_ref, chf_id=chf_id)

    # -- outbox ---------------------------------------------------------------------------------------------------

    def outbox_due(self, limit: int, now: str, *, republish: bool = True, kind: str | None = None) -> list[OutboxRow]:
        """Rows to publish now (see `Outbox.due`)."""
        return self.outbox.due(limit, now, republish=republish, kind=kind)

    def outbox_published(
        self, message_ids: Sequence[str], *, needs_ack: bool = True, retry_at: Mapping[str, str] | None = None
    ) -> None:
        """PUBACK received: the broker holds them (see `Outbox.published`)."""
        self.outbox.published(message_ids, needs_ack=needs_ack, retry_at=retry_at)

    def outbox_refused(self, refusals: Sequence[tuple[str, str, str]]) -> None:
        """The broker refused these publishes (message_id, reason, retry_at)."""
        self.outbox.refused(refusals)

    def outbox_acked(self, acks: Sequence[tuple[str, str, str | None]]) -> int:
        """DSP acks (message_id, result, reason); returns how many rows changed."""
        return self.outbox.acked(acks)

    def outbox_resend(self, first: int, last: int, asked_by: str) -> int:
        """A DSP asked for results `first`..`last` (by sequence) again; returns how many were queued."""
        return self.job_ledger.resend_results(first, last, asked_by)

    def outbox_backlog(self) -> dict[str, Any]:
        """What `reflash status` shows of the outbox."""
        return self.outbox.backlog()

    def outcomes_on(self, day: date) -> dict[str, int]:
        """Hubs finished on a UTC day, by outcome."""
        return self.job_ledger.outcomes_on(day)

    def outbox_counts(self) -> dict[str, int]:
        return self.outbox.counts()
