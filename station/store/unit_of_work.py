"""The unit of work the store's parts share: one database, one transaction at a time, one clock and one actor.

A part that changes state does it inside `transaction()`, and a part that composes others (a job's outcome: its
final state, the custody event, the audit entry, the outbox message and the charge line) hands the same `Session`
to each, so what they write is one COMMIT or nothing. It also keeps what every transaction shares: the crash points
`after:KIND` for each audit entry once its transaction has committed, and whether the store can write at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from station import crash_point

if TYPE_CHECKING:
    from station.store.database import Database, Session

__all__ = ["Actor", "StoreError", "UnitOfWork"]

log = logging.getLogger("station.store")


class StoreError(Exception):
    """A state change the store refuses (it would break an invariant); nothing was written."""


@dataclass(frozen=True)
class Actor:
    """Who writes: every record carries the station, the operator and the facility approval reference."""

    station: str
    operator: str
    facility: str


def utc_now() -> datetime:
    return datetime.now(UTC)


class UnitOfWork:
    """The transaction the parts share, and what each transaction needs: the actor, the time, the crash points."""

    def __init__(self, database: Database, actor: Actor, clock: Callable[[], datetime] = utc_now) -> None:
        self.database = database
        self.actor = actor
        self._clock = clock
        self._appended: list[str] = []
        self._write_error: str | None = None

    def now(self) -> str:
        return self._clock().astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One state change, all or nothing. When the disk is full or read-only (or fails) the change is not made,
        the error is raised to the caller, and the store says so once, then once more when a write succeeds again
        (`writable`): the callers retry, and nothing is written twice or half."""
        self._appended = []
        try:
            with self.database.transaction() as session:
                yield session
        except self.database.write_errors as exc:
            self._write_failed(exc)
            raise
        self._write_succeeded()
        for kind in self._appended:
            crash_point.reached(f"after:{kind}")

    def reader(self) -> Session:
        """Reads outside a transaction."""
        return self.database.reader()

    def appended(self, kind: str) -> None:
        """An audit entry of `kind` is part of the open transaction (its `after:KIND` crash point follows COMMIT)."""
        self._appended.append(kind)
        crash_point.reached(f"during:{kind}")

    @property
    def writable(self) -> bool:
        """False from a failed write (disk full, read-only, I/O error) until the next write that succeeds."""
        return self._write_error is None

    def _write_failed(self, exc: Exception) -> None:
        if self._write_error is None:
            log.error("store %s: cannot write: %s; the station goes on and catches up when it can write",
                      self.database.where, exc)  # fmt: skip
        self._write_error = str(exc)

    def _write_succeeded(self) -> None:
        if self._write_error is not None:
            log.warning("store %s: writing again (it could not since: %s)", self.database.where, self._write_error)
            self._write_error = None
