"""The order book: the DCC's re-flash orders (and stock orders), the hubs each names, and the custody actions an
operator takes against an order (scan-in, scan-out), through to closing it with its summary for the DSP.

An order is imported whole or not at all, a hub is in at most one open order, and a hub leaves (is dispatched) only
with a final outcome in the order or when it arrived unasked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from firmware_catalog.eui64 import normalise_eui64
from station.audit import AuditEntry
from station.store.custody import CustodyEvent
from station.store.unit_of_work import StoreError

if TYPE_CHECKING:
    from station.store.audit_log import AuditLog
    from station.store.custody import Custody
    from station.store.database import Row
    from station.store.jobs import JobLedger
    from station.store.outbox import Outbox
    from station.store.unit_of_work import UnitOfWork

__all__ = ["NewOrder", "OrderBook", "OrderConflict", "OrderKind", "OrderProgress", "OrderRecord", "OrderState"]


class OrderKind(StrEnum):
    DCC = "dcc"  # a DCC re-flash request: the hubs it names are charged
    STOCK = "stock"  # the CSP's own stock


class OrderState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class NewOrder(Protocol):
    """An order request as read from its file (`station.orders.OrderRequest` is one)."""

    @property
    def ref(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def requesting_party(self) -> str | None: ...
    @property
    def region(self) -> str: ...
    @property
    def hubs(self) -> Sequence[tuple[str, int]]: ...  # (CHF ID, line in the file)
    @property
    def source(self) -> str: ...
    @property
    def sha256(self) -> str: ...


class OrderConflict(StoreError):
    """A request refused whole because of what is already stored; `problems` lists every one, each naming its line
    (said as `station.orders.OrderImportError` says the problems found in the file)."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        listing = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(f"{source}: refused, {len(problems)} problem(s):\n{listing}")


@dataclass(frozen=True)
class OrderRecord:
    ref: str
    kind: OrderKind
    requesting_party: str | None
    region: str
    state: OrderState
    imported_at: str
    closed_at: str | None
    source: str
    source_sha256: str


@dataclass(frozen=True)
class OrderProgress:
    """An order and how far it got: hubs it names, hubs with a final outcome in it."""

    order: OrderRecord
    hubs: int
    processed: int


def _order(row: Row) -> OrderRecord:
    return OrderRecord(
        ref=row["ref"],
        kind=OrderKind(row["kind"]),
        requesting_party=row["requesting_party"],
        region=row["region"],
        state=OrderState(row["state"]),
        imported_at=row["imported_at"],
        closed_at=row["closed_at"],
        source=row["source"],
        source_sha256=row["source_sha256"],
    )


_OPEN_ORDER_OF_HUB = (
    "SELECT o.ref FROM order_hubs h JOIN orders o ON o.ref = h.order_ref WHERE h.chf_id = ? AND o.state = 'open'"
)


class OrderBook:
    """Orders, the hubs they name, and scan-in, scan-out and close."""

    def __init__(self, work: UnitOfWork, audit_log: AuditLog, custody: Custody, jobs: JobLedger,
                 outbox: Outbox) -> None:  # fmt: skip
        self._work = work
        self._audit_log = audit_log
        self._custody = custody
        self._jobs = jobs
        self._outbox = outbox

    def import_order(self, request: NewOrder) -> None:
        """Store a request whole, or nothing: problems against what is already stored are listed like file ones."""
        with self._work.transaction() as session:
            problems: list[str] = []
            if session.execute("SELECT 1 FROM orders WHERE ref = ?", (request.ref,)).fetchone():
                problems.append(f"order_ref {request.ref!r} was already imported")
            for chf_id, line in request.hubs:
                other = session.execute(_OPEN_ORDER_OF_HUB, (chf_id,)).fetchone()
                if other is not None:
                    problems.append(f"line {line}: chf_id {chf_id} is already in open order {other['ref']}")
            if problems:
                raise OrderConflict(request.source, problems)
            session.execute(
                "INSERT INTO orders (ref, kind, requesting_party, region, state, imported_at, source, source_sha256) "
                "VALUES (?,?,?,?, 'open', ?,?,?)",
                (request.ref, request.kind, request.requesting_party, request.region, self._work.now(),
                 request.source, request.sha256),
            )  # fmt: skip
            session.executemany(
                "INSERT INTO order_hubs (order_ref, chf_id, line) VALUES (?,?,?)",
                [(request.ref, chf_id, line) for chf_id, line in request.hubs],
            )
            self._audit_log.append(
                session,
                "order_imported",
                {
                    "order_ref": request.ref,
                    "kind": request.kind,
                    "requesting_party": request.requesting_party,
                    "region": request.region,
                    "hubs": len(request.hubs),
                    "source": request.source,
                    "source_sha256": request.sha256,
                },
            )

    def order(self, ref: str) -> OrderRecord:
        row = self._work.reader().execute("SELECT * FROM orders WHERE ref = ?", (ref,)).fetchone()
        if row is None:
            raise StoreError(f"no order {ref!r}")
        return _order(row)

    def orders(self) -> list[OrderRecord]:
        """Every order, oldest import first."""
        return [_order(row) for row in self._work.reader().execute("SELECT * FROM orders ORDER BY imported_at")]

    def open_refs(self) -> list[str]:
        """The open orders' references, oldest import first (the bench page asks on every event it sends)."""
        rows = self._work.reader().execute(
            "SELECT ref FROM orders WHERE state = ? ORDER BY imported_at", (OrderState.OPEN.value,)
        )
        return [str(row["ref"]) for row in rows]

    def progress(self) -> list[OrderProgress]:
        """Every order with its count of hubs named and processed, oldest import first."""
        reader = self._work.reader()
        named = {
            row["order_ref"]: int(row["n"])
            for row in reader.execute("SELECT order_ref, COUNT(*) AS n FROM order_hubs GROUP BY order_ref")
        }
        return [
            OrderProgress(order, named.get(order.ref, 0), self._jobs.final_count(order.ref)) for order in self.orders()
        ]

    def hubs(self, ref: str) -> list[str]:
        """The hubs the order names, in the order of its lines."""
        rows = self._work.reader().execute("SELECT chf_id FROM order_hubs WHERE order_ref = ? ORDER BY line", (ref,))
        return [str(row["chf_id"]) for row in rows]

    def open_order_for(self, chf_id: str) -> str | None:
        row = self._work.reader().execute(_OPEN_ORDER_OF_HUB, (chf_id,)).fetchone()
        return None if row is None else str(row["ref"])

    def receive(self, order_ref: str, chf_id: str) -> bool:
        """Scan-in. Returns whether the order asked for the hub; an unasked hub is recorded, and held."""
        chf_id = normalise_eui64(chf_id)
        with self._work.transaction() as session:
            order = session.execute("SELECT state FROM orders WHERE ref = ?", (order_ref,)).fetchone()
            if order is None:
                raise StoreError(f"no order {order_ref!r}")
            if order["state"] != OrderState.OPEN:
                raise StoreError(f"order {order_ref} is closed")
            asked = (
                session.execute(
                    "SELECT 1 FROM order_hubs WHERE order_ref = ? AND chf_id = ?", (order_ref, chf_id)
                ).fetchone()
                is not None
            )
            self._custody.record(session, chf_id, order_ref, CustodyEvent.RECEIVED, asked=asked)
            self._audit_log.append(session, "hub_received", {"order_ref": order_ref, "chf_id": chf_id, "asked": asked})
            return asked

    def dispatch(self, order_ref: str, chf_id: str) -> str:
        """Scan-out. Only a hub with a final outcome in the order (or one that arrived unasked) may leave."""
        chf_id = normalise_eui64(chf_id)
        with self._work.transaction() as session:
            job = self._jobs.final(chf_id, order_ref, session)
            unasked = self._custody.has(session, chf_id, order_ref, CustodyEvent.RECEIVED, asked=False)
            if job is None and not unasked:
                raise StoreError(f"hub {chf_id} has no final outcome in order {order_ref}: it was not processed")
            if self._custody.has(session, chf_id, order_ref, CustodyEvent.DISPATCHED):
                raise StoreError(f"hub {chf_id} was already dispatched in order {order_ref}")
            outcome = str(job.outcome) if job is not None else "UNASKED"
            self._custody.record(session, chf_id, order_ref, CustodyEvent.DISPATCHED, asked=not unasked)
            self._audit_log.append(
                session, "hub_dispatched", {"order_ref": order_ref, "chf_id": chf_id, "outcome": outcome}
            )
            return outcome

    def release(self, chf_id: str) -> int:
        """A supervisor lets a hub held as UNEXPECTED (no open order named it) leave the station: a `dispatched`
        custody event outside any order and a `hub_released` entry. Returns the job that found it UNEXPECTED."""
        chf_id = normalise_eui64(chf_id)
        with self._work.transaction() as session:
            row = session.execute(
                "SELECT id, outcome, finished_at FROM jobs WHERE chf_id = ? ORDER BY id DESC LIMIT 1", (chf_id,)
            ).fetchone()
            if row is None or row["outcome"] != "UNEXPECTED":
                raise StoreError(f"hub {chf_id} is not held as UNEXPECTED: only such a hub is released")
            released = session.execute(
                "SELECT 1 FROM custody WHERE chf_id = ? AND order_ref IS NULL AND event = 'dispatched' AND at >= ?",
                (chf_id, row["finished_at"]),
            ).fetchone()
            if released is not None:
                raise StoreError(f"hub {chf_id} was already released")
            self._custody.record(session, chf_id, None, CustodyEvent.DISPATCHED, asked=False)
            self._audit_log.append(session, "hub_released", {"chf_id": chf_id, "job_id": row["id"],
                                                             "outcome": "UNEXPECTED"})  # fmt: skip
            return int(row["id"])

    def close(
        self, ref: str, summary: dict[str, Any], message: Callable[[str, str], dict[str, Any]] | None = None
    ) -> AuditEntry:
        """Close an order; `message(message_id, closed_at)` builds the order summary queued in the same transaction."""
        with self._work.transaction() as session:
            order = session.execute("SELECT state FROM orders WHERE ref = ?", (ref,)).fetchone()
            if order is None:
                raise StoreError(f"no order {ref!r}")
            if order["state"] == OrderState.CLOSED:
                raise StoreError(f"order {ref} is already closed")
            closed_at = self._work.now()
            session.execute("UPDATE orders SET state = 'closed', closed_at = ? WHERE ref = ?", (closed_at, ref))
            if message is not None:
                message_id = self._outbox.new_message_id()
                self._outbox.enqueue(session, "order_summary", message(message_id, closed_at), message_id=message_id,
                                     job_id=None, created_at=closed_at)  # fmt: skip
            return self._audit_log.append(session, "order_closed", {"order_ref": ref, **summary})
