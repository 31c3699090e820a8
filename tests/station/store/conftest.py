"""What the store's tests share beyond the station's fixtures."""

from __future__ import annotations

import sqlite3

from station.store import Store


def beside(store: Store) -> sqlite3.Connection:
    """The store's file through a connection of its own: what any code could try below the store's parts (the
    database itself must refuse it)."""
    return sqlite3.connect(store.path, isolation_level=None)
