"""The seam between the store's parts and a database engine: what a part may ask of the database, and no more.

The parts (`audit_log`, `custody`, `orders`, `jobs`, `outbox`, `catalog_pin`) hold their SQL and run it through a
`Session`; the engine, its connection, its transactions and its schema sit behind `Database`. SQLite is the one
`Database` today (`station.store.sqlite`, with its DDL in `station.store.schema`). The parts' SQL keeps to what SQLite
and PostgreSQL both run (`INSERT ... ON CONFLICT`, `RETURNING`, `COALESCE`, `CASE`; no `INSERT OR REPLACE`, no
scalar `MAX(a, b)`, no numbered parameters), with `?` placeholders, so a second backend is one new module: a
`Database` whose `Session` rewrites `?` to its driver's placeholder, whose rows can be read by column name, and which
brings its own DDL and migrations.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

__all__ = ["Database", "Result", "Row", "Session"]


class Row(Protocol):
    """One row of a result, read by column name (or position)."""

    def __getitem__(self, key: str | int, /) -> Any: ...


class Result(Protocol):
    """What a statement returned: its rows, or how many rows it changed."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Session(Protocol):
    """Where a part runs its SQL: inside a transaction (`Database.transaction`) or for reads (`Database.reader`)."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Result: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Result: ...


class Database(Protocol):
    """A database engine holding the station's schema, at its newest version once constructed."""

    #: Where the data lives, for messages (a file path, a connection URL without its password).
    where: str
    #: The engine's errors that mean "cannot write now" (disk full, read-only, I/O error, lock timeout): the store
    #: says so once and goes on; the callers retry.
    write_errors: tuple[type[Exception], ...]

    def transaction(self) -> AbstractContextManager[Session]:
        """One transaction, all or nothing: committed when the block ends, rolled back when it raises."""
        ...

    def reader(self) -> Session:
        """Reads outside a transaction; each sees the last commit."""
        ...

    @property
    def schema_version(self) -> int: ...

    def close(self) -> None: ...
