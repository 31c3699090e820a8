"""Custody: where each hub has been, as events (received, on the bench, processed, dispatched), each with its order,
its slot, the operator and the time.

The chain of custody the DCC asks for: a hub is flashed only once it was scanned in to the order that names it, and
leaves only with a final outcome. Jobs write `on_bench` and `processed` in their own transactions; the order book
writes `received` and `dispatched`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from station.store.database import Session
    from station.store.unit_of_work import UnitOfWork

__all__ = ["Custody", "CustodyEvent", "CustodyRecord"]


class CustodyEvent(StrEnum):
    RECEIVED = "received"  # scanned in to an order
    ON_BENCH = "on_bench"  # identified on a slot
    PROCESSED = "processed"  # given its final outcome
    DISPATCHED = "dispatched"  # scanned out


@dataclass(frozen=True)
class CustodyRecord:
    chf_id: str
    order_ref: str | None
    event: CustodyEvent
    slot: str | None
    operator: str
    at: str
    asked: bool  # whether the order named the hub


class Custody:
    """The custody events of every hub."""

    def __init__(self, work: UnitOfWork) -> None:
        self._work = work

    def record(self, session: Session, chf_id: str, order_ref: str | None, event: CustodyEvent, *,
               slot: str | None = None, asked: bool = True, at: str | None = None) -> None:  # fmt: skip
        """An event, inside the caller's transaction."""
        session.execute(
            "INSERT INTO custody (chf_id, order_ref, event, slot, operator, at, asked) VALUES (?,?,?,?,?,?,?)",
            (chf_id, order_ref, event.value, slot, self._work.actor.operator, at or self._work.now(), int(asked)),
        )

    def has(
        self, session: Session, chf_id: str, order_ref: str, event: CustodyEvent, *, asked: bool | None = None
    ) -> bool:
        """Whether the hub has had `event` in the order (only those the order did or did not name, with `asked`)."""
        if asked is None:
            row = session.execute(
                "SELECT 1 FROM custody WHERE chf_id = ? AND order_ref = ? AND event = ? LIMIT 1",
                (chf_id, order_ref, event.value),
            ).fetchone()
        else:
            row = session.execute(
                "SELECT 1 FROM custody WHERE chf_id = ? AND order_ref = ? AND event = ? AND asked = ? LIMIT 1",
                (chf_id, order_ref, event.value, int(asked)),
            ).fetchone()
        return row is not None

    def scanned_in(self, chf_id: str, order_ref: str) -> bool:
        """Whether the hub was scanned in (received) to `order_ref`, which asked for it: custody has begun."""
        return self.has(self._work.reader(), chf_id, order_ref, CustodyEvent.RECEIVED, asked=True)

    def events(self, order_ref: str) -> list[CustodyRecord]:
        """The order's custody events, in the order they happened."""
        rows = self._work.reader().execute(
            "SELECT chf_id, order_ref, event, slot, operator, at, asked FROM custody WHERE order_ref = ? ORDER BY id",
            (order_ref,),
        )
        return [
            CustodyRecord(
                row["chf_id"],
                row["order_ref"],
                CustodyEvent(row["event"]),
                row["slot"],
                row["operator"],
                row["at"],
                bool(row["asked"]),
            )
            for row in rows
        ]
