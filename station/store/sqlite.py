"""The SQLite `Database`: one connection to one file in WAL mode, the station's embedded default.

It owns what is SQLite's alone: the pragmas (WAL, `synchronous=FULL` so a committed outcome survives a power cut,
foreign keys, a busy timeout), `BEGIN IMMEDIATE` so each state change is exactly one transaction that takes the write
lock up front, the rollback that must not hide the error that caused it, and the schema version in `user_version`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from station.store import schema

__all__ = ["SqliteDatabase"]


class SqliteDatabase:
    """The store's file, opened and migrated to the newest schema."""

    write_errors: tuple[type[Exception], ...] = (sqlite3.OperationalError,)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.where = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE) so that each state change is exactly one.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed outcome survives a power cut, not only a process kill.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        schema.migrate(self)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        cursor = self._db.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            yield cursor
            cursor.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        # SQLite may already have rolled back (SQLITE_FULL at COMMIT does); a ROLLBACK that fails must not hide the
        # error that caused it, and must not leave a transaction open for the next BEGIN to trip over.
        if self._db.in_transaction:
            with suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def reader(self) -> sqlite3.Connection:
        return self._db

    @property
    def schema_version(self) -> int:
        version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
        return version

    @property
    def journal_mode(self) -> str:
        return str(self._db.execute("PRAGMA journal_mode").fetchone()[0])

    def close(self) -> None:
        self._db.close()
