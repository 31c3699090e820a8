"""The outbox: messages for the DSP, written in the transaction of the state change they report, and their way to
the broker and back (published, refused, acked, asked for again).

A message is never lost between the store and the broker: the reporter publishes what `due` returns and records the
broker's PUBACK (`published`), its refusal (`refused`) and the DSP's ack (`acked`); a row stays open until acked.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from station import crash_point

if TYPE_CHECKING:
    from station.store.audit_log import AuditLog
    from station.store.database import Row, Session
    from station.store.unit_of_work import UnitOfWork

__all__ = ["AUDIT_CHECKPOINT", "Outbox", "OutboxRow", "OutboxState"]

# A signed audit checkpoint on its way to the DSP (its anchor). Acked by the bridge like a result, but not a result:
# the backlog counts (`counts`, `backlog`) are of results and order summaries, and anchors are counted apart.
AUDIT_CHECKPOINT = "audit_checkpoint"


class OutboxState(StrEnum):
    PENDING = "pending"  # to publish (never published, refused by the broker, or asked for again)
    AT_BROKER = "at_broker"  # the broker holds it (PUBACK); no DSP ack yet
    CONFIRMED = "confirmed"  # the DSP applied it (or already had it), or its kind needs no ack
    REJECTED = "rejected"  # the DSP refused it


@dataclass(frozen=True)
class OutboxRow:
    """One outbound message and how far it got."""

    message_id: str
    kind: str
    payload: str
    state: OutboxState
    publishes: int
    refusals: int = 0
    job_id: int | None = None
    created_at: str | None = None
    published_at: str | None = None
    confirmed_at: str | None = None
    next_attempt_at: str | None = None
    last_error: str | None = None
    ack: str | None = None


def _row(row: Row) -> OutboxRow:
    return OutboxRow(
        message_id=row["message_id"],
        kind=row["kind"],
        payload=row["payload"],
        state=OutboxState(row["state"]),
        publishes=row["publishes"],
        refusals=row["refusals"],
        job_id=row["job_id"],
        created_at=row["created_at"],
        published_at=row["published_at"],
        confirmed_at=row["confirmed_at"],
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
        ack=row["ack"],
    )


class Outbox:
    """Outbound messages, from the transaction that made them to the DSP's ack."""

    def __init__(self, work: UnitOfWork, audit_log: AuditLog) -> None:
        self._work = work
        self._audit_log = audit_log

    def enqueue(self, session: Session, kind: str, payload: dict[str, Any], *, message_id: str, job_id: int | None,
                created_at: str) -> None:  # fmt: skip
        """Queue a message inside the caller's transaction."""
        session.execute(
            "INSERT INTO outbox (message_id, job_id, kind, payload, state, created_at) VALUES (?,?,?,?, 'pending', ?)",
            (message_id, job_id, kind, json.dumps(payload, sort_keys=True), created_at),
        )

    @staticmethod
    def new_message_id() -> str:
        return str(uuid.uuid4())

    def due(self, limit: int, now: str, *, republish: bool = True, kind: str | None = None) -> list[OutboxRow]:
        """Rows to publish now: pending rows whose retry time has come (never published, or refused by the broker),
        and, with `republish`, rows at the broker whose retry time has come without a DSP ack. `kind` keeps to one
        kind of message (a one-shot command publishes only its order summary)."""
        states = "'pending', 'at_broker'" if republish else "'pending'"
        params: list[Any] = [now]
        of_kind = ""
        if kind is not None:
            of_kind = " AND kind = ?"
            params.append(kind)
        params.append(limit)
        rows = self._work.reader().execute(
            f"SELECT * FROM outbox WHERE state IN ({states}) AND COALESCE(next_attempt_at, '') <= ?{of_kind} "  # noqa: S608 -- fixed fragments
            "ORDER BY created_at, message_id LIMIT ?",
            params,
        )
        return [_row(row) for row in rows]

    def published(
        self, message_ids: Sequence[str], *, needs_ack: bool = True, retry_at: Mapping[str, str] | None = None
    ) -> None:
        """PUBACK received (success): the broker holds them. A kind the DSP does not ack is done at this point.
        `retry_at` is when each is published again if no DSP ack comes. The count of publishes always grows, even
        when the DSP's ack was recorded first (the ack can overtake the PUBACK)."""
        if not message_ids:
            return
        now = self._work.now()
        state, confirmed_at = (OutboxState.AT_BROKER, None) if needs_ack else (OutboxState.CONFIRMED, now)
        retry = retry_at or {}
        with self._work.transaction() as session:
            session.executemany(
                "UPDATE outbox SET publishes = publishes + 1, published_at = ?, next_attempt_at = ?, "
                "last_error = NULL, "
                "confirmed_at = CASE WHEN state IN ('pending', 'at_broker') THEN ? ELSE confirmed_at END, "
                "state = CASE WHEN state IN ('pending', 'at_broker') THEN ? ELSE state END "
                "WHERE message_id = ?",
                [(now, retry.get(message_id), confirmed_at, state.value, message_id) for message_id in message_ids],
            )
        crash_point.reached("after:published")

    def refused(self, refusals: Sequence[tuple[str, str, str]]) -> None:
        """The broker refused these publishes (message_id, reason, retry_at): the rows keep their state (a refused
        row is not at the broker) and are tried again at retry_at."""
        if not refusals:
            return
        with self._work.transaction() as session:
            session.executemany(
                "UPDATE outbox SET refusals = refusals + 1, last_error = ?, next_attempt_at = ? "
                "WHERE message_id = ? AND state IN ('pending', 'at_broker')",
                [(reason, retry_at, message_id) for message_id, reason, retry_at in refusals],
            )

    def acked(self, acks: Sequence[tuple[str, str, str | None]]) -> int:
        """DSP acks (message_id, result, reason): confirmed (applied or duplicate) or rejected. One audit entry
        records the batch. Returns how many rows changed; an ack for an unknown or settled message changes none."""
        if not acks:
            return 0
        now = self._work.now()
        settled: list[dict[str, str | None]] = []
        with self._work.transaction() as session:
            for message_id, result, reason in acks:
                state = OutboxState.REJECTED if result == "rejected" else OutboxState.CONFIRMED
                # An ack proves a publish: a row whose PUBACK is not recorded yet still counts one.
                changed = session.execute(
                    "UPDATE outbox SET state = ?, confirmed_at = ?, ack = ?, "
                    "publishes = CASE WHEN publishes < 1 THEN 1 ELSE publishes END "
                    "WHERE message_id = ? AND state IN ('pending', 'at_broker')",
                    (state.value, now, json.dumps({"result": result, "reason": reason}), message_id),
                ).rowcount
                if changed:
                    settled.append({"message_id": message_id, "result": result, "reason": reason})
            if settled:
                self._audit_log.append(session, "dsp_acks", {"acks": settled})
        return len(settled)

    def requeue(self, session: Session, job_ids: Sequence[int]) -> int:
        """Queue the hub results of these jobs to be published now, whatever their state, inside the caller's
        transaction. Returns how many were queued."""
        queued = 0
        for job_id in job_ids:
            queued += session.execute(
                "UPDATE outbox SET state = 'pending', next_attempt_at = NULL WHERE kind = 'hub_result' AND job_id = ?",
                (job_id,),
            ).rowcount
        return queued

    def backlog(self) -> dict[str, Any]:
        """What `reflash status` shows of the outbox: counts by state, the oldest unconfirmed row's creation time,
        rows the broker refused last time, and the last DSP ack recorded."""
        reader = self._work.reader()
        row = reader.execute(
            "SELECT MIN(created_at) AS oldest, COUNT(last_error) AS refused FROM outbox "
            "WHERE state IN ('pending', 'at_broker') AND kind != ?",
            (AUDIT_CHECKPOINT,),
        ).fetchone()
        last_ack = reader.execute(
            "SELECT MAX(confirmed_at) FROM outbox WHERE ack IS NOT NULL AND state IN ('confirmed', 'rejected')"
        ).fetchone()[0]
        refusal = reader.execute(
            "SELECT last_error FROM outbox WHERE last_error IS NOT NULL AND state IN ('pending', 'at_broker') "
            "ORDER BY next_attempt_at DESC LIMIT 1"
        ).fetchone()
        return {
            **self.counts(),
            "oldest_unconfirmed_at": row["oldest"],
            "refused": int(row["refused"] or 0),
            "last_refusal": refusal[0] if refusal else None,
            "last_dsp_ack_at": last_ack,
            "anchors_waiting": self.anchors_waiting(),
        }

    def anchors_waiting(self) -> int:
        """Signed checkpoints not yet acknowledged by the DSP: entries up to them could still be cut unseen."""
        row = self._work.reader().execute(
            "SELECT COUNT(*) FROM outbox WHERE kind = ? AND state IN ('pending', 'at_broker')", (AUDIT_CHECKPOINT,)
        )
        return int(row.fetchone()[0])

    def counts(self) -> dict[str, int]:
        counts = {state.value: 0 for state in OutboxState}
        rows = self._work.reader().execute(
            "SELECT state, COUNT(*) AS n FROM outbox WHERE kind != ? GROUP BY state", (AUDIT_CHECKPOINT,)
        )
        for row in rows:
            counts[row["state"]] = row["n"]
        return counts

    def messages(self, *, kind: str | None = None) -> list[OutboxRow]:
        """Every message (of one kind), oldest first."""
        reader = self._work.reader()
        rows = (
            reader.execute("SELECT * FROM outbox WHERE kind = ? ORDER BY created_at, message_id", (kind,))
            if kind is not None
            else reader.execute("SELECT * FROM outbox ORDER BY created_at, message_id")
        )
        return [_row(row) for row in rows]

    def unsent(self, kind: str) -> int:
        """How many messages of `kind` wait for their first publish that the broker has not refused."""
        row = (
            self._work.reader()
            .execute("SELECT COUNT(*) FROM outbox WHERE kind = ? AND state = 'pending' AND last_error IS NULL", (kind,))
            .fetchone()
        )
        return int(row[0])
