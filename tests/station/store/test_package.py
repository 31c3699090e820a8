"""The store as a package of parts: it depends on nothing above it, SQL stays inside it and behind its seam, and the
parts run over any `Database`, not only the SQLite one."""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from station.outcome import Outcome
from station.store import Store
from station.store.database import Result, Session
from station.store.sqlite import SqliteDatabase
from tests.station.conftest import ACTOR, hub_id, simple_report

ROOT = Path(__file__).resolve().parents[3]
STORE = ROOT / "station" / "store"

# What the store may import: the standard library, cryptography, the catalog package (keys, pins, EUI-64s), and
# the station's value modules that nothing in the store's way depends on. Anything else in `station` is above it.
BELOW = (
    "cryptography",
    "firmware_catalog",
    "station.store",
    "station.audit",
    "station.outcome",
    "station.crash_point",
    "station.identifier",
)
# Only the SQLite database and its DDL know they run on SQLite; every other part speaks through the seam.
ENGINE_MODULES = {"sqlite.py", "schema.py"}


def test_these_tests_look_where_the_store_is() -> None:
    # The checks below are one per module found: a wrong path would find none and pass silently.
    assert {"__init__.py", "database.py", "unit_of_work.py", "jobs.py"} <= {p.name for p in STORE.glob("*.py")}


def imports_of(path: Path) -> Iterator[str]:
    """Every module a file imports, anywhere in it (at the top, under TYPE_CHECKING, inside a function)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            # `from station import crash_point` imports station.crash_point: name what was imported.
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def is_below(module: str) -> bool:
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top == "__future__":
        return True
    return any(module == allowed or module.startswith(f"{allowed}.") for allowed in BELOW)


@pytest.mark.parametrize("path", sorted(STORE.glob("*.py")), ids=lambda p: p.name)
def test_the_store_imports_nothing_above_it(path: Path) -> None:
    upward = sorted({module for module in imports_of(path) if not is_below(module)})
    assert upward == [], f"{path.name} imports {upward}: the store must depend on nothing above it"


@pytest.mark.parametrize("path", sorted(STORE.glob("*.py")), ids=lambda p: p.name)
def test_only_the_sqlite_modules_know_the_engine(path: Path) -> None:
    if path.name in ENGINE_MODULES:
        return
    engine = [m for m in imports_of(path) if m.split(".")[0] == "sqlite3"]
    assert engine == [], f"{path.name} reaches past the Database seam to sqlite3"


def test_the_import_check_would_catch_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from station.config import StationConfig\n"
    )
    assert [m for m in imports_of(bad) if not is_below(m)] == ["station.config.StationConfig"]


SQL = re.compile(
    r"\b(SELECT\s.+\sFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|PRAGMA)\b", re.I | re.S
)


def sql_strings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and SQL.search(n.value)]  # fmt: skip


def test_no_sql_outside_the_store() -> None:
    found = {
        str(path.relative_to(ROOT)): sql_strings(path)
        for path in (ROOT / "station").rglob("*.py")
        if STORE not in path.parents and sql_strings(path)
    }
    assert found == {}


class CountingSession:
    """A `Session` that counts the statements it passes on, as a backend's own session would translate them."""

    def __init__(self, inner: Session, counted: list[str]) -> None:
        self._inner = inner
        self._counted = counted

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Result:
        self._counted.append(sql)
        return self._inner.execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Result:
        self._counted.append(sql)
        return self._inner.executemany(sql, parameters)


class CountingDatabase:
    """A second `Database`, made of nothing but the seam: it wraps another and sees every statement."""

    def __init__(self, inner: SqliteDatabase) -> None:
        self._inner = inner
        self.where = f"counting:{inner.where}"
        self.write_errors = inner.write_errors
        self.statements: list[str] = []

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._inner.transaction() as session:
            yield CountingSession(session, self.statements)

    def reader(self) -> Session:
        return CountingSession(self._inner.reader(), self.statements)

    @property
    def schema_version(self) -> int:
        return self._inner.schema_version

    def close(self) -> None:
        self._inner.close()


def test_the_parts_run_over_any_database_behind_the_seam(tmp_path: Path) -> None:
    database = CountingDatabase(SqliteDatabase(tmp_path / "station.db"))
    store = Store.over(database, ACTOR)
    job_id = store.start_job(chf_id=hub_id(1), gpf_id=None, order_ref=None, slot="A1", identity={}).id
    record = store.finish_job(
        job_id, outcome=Outcome.REFLASHED, reason="REFLASHED", firmware_after="01020000", target_version="01020000",
        image_sha256="ab" * 32, hub_sha256="ab" * 32, charge_pence=0, currency="GBP", report=simple_report,
    )  # fmt: skip
    assert (record.state, record.outcome, record.result_sequence) == ("final", Outcome.REFLASHED, 1)
    assert [message.job_id for message in store.outbox.messages()] == [job_id]
    assert [entry.kind for entry in store.audit_entries()] == ["job_started", "job_finished"]
    assert any(sql.startswith("INSERT INTO outbox") for sql in database.statements)
    store.close()
