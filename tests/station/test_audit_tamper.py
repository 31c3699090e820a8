"""Tampering with a copy of the database, one kind of edit at a time: `reflash audit verify` names the entry."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from firmware_catalog.keys import generate_key, write_keypair
from station.audit import verify_chain
from station.cli import main
from station.store import Store
from tests.station.conftest import ACTOR, hub_id


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A station config whose store holds 12 finished jobs and signed checkpoints."""
    write_keypair(generate_key(), tmp_path / "station")
    write_keypair(generate_key(), tmp_path / "authority")
    path = tmp_path / "station.toml"
    path.write_text(
        f"""[station]
id = "{ACTOR.station}"
region = "North"
operator = "{ACTOR.operator}"
facility_approval = "{ACTOR.facility}"
store = "state/station.db"
key = "station.key"
checkpoint_every = 10

[catalog]
folder = "catalog"
authority_key = "authority.pub"
"""
    )
    from station.config import load_config

    store = load_config(path).open_store()
    for n in range(12):
        job_id = store.start_job(chf_id=hub_id(n), gpf_id=None, order_ref=None, slot="A1", identity={}).id
        store.record_event(job_id, "decision", code="OK")
    store.checkpoint()
    store.close()
    return path


def verify(config: Path) -> tuple[int, dict[str, object]]:
    result = CliRunner().invoke(main, ["audit", "verify", "--json", "--config", str(config)])
    return result.exit_code, json.loads(result.output)


def tamper(config: Path, *statements: str) -> None:
    db = sqlite3.connect(config.parent / "state/station.db")
    # An attacker with the file can drop the append-only triggers; the chain must still give them away.
    db.executescript("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;" + ";".join(statements) + ";")
    db.commit()
    db.close()


def test_untouched_log_verifies(config: Path) -> None:
    code, report = verify(config)
    assert code == 0
    assert report["ok"] is True
    assert report["checkpoint_signatures_checked"] is True


@pytest.mark.parametrize(
    ("statements", "first_bad"),
    [
        (["UPDATE audit SET data = replace(data, '\"OK\"', '\"NO\"') WHERE seq = 6"], 6),
        (["UPDATE audit SET operator = 'someone-else' WHERE seq = 3"], 3),
        (["DELETE FROM audit WHERE seq = 9"], 9),
        # Reorder: swap the contents of 4 and 5 by moving them through free sequence numbers.
        (
            [
                "UPDATE audit SET seq = 1004 WHERE seq = 4",
                "UPDATE audit SET seq = 4 WHERE seq = 5",
                "UPDATE audit SET seq = 5 WHERE seq = 1004",
            ],
            4,
        ),
        # Cut the tail after the checkpoint at 10, and the later checkpoint with it: the one at 10 still stands.
        (["DELETE FROM audit WHERE seq > 8", "DELETE FROM audit_checkpoints WHERE seq > 10"], 9),
        # Rewrite an entry and its hash consistently: the chain link to the next entry breaks.
        (["UPDATE audit SET hash = '" + "1" * 64 + "' WHERE seq = 7"], 7),
    ],
)
def test_each_kind_of_edit_is_named(config: Path, statements: list[str], first_bad: int) -> None:
    tamper(config, *statements)
    code, report = verify(config)
    assert code == 1
    assert report["ok"] is False
    assert report["first_bad_seq"] == first_bad, report["problem"]


def test_forged_checkpoint_signature_is_caught(config: Path) -> None:
    tamper(config, "UPDATE audit_checkpoints SET signature = zeroblob(64) WHERE seq = 10")
    code, report = verify(config)
    assert code == 1
    assert "bad signature" in str(report["problem"])


def test_recomputed_chain_still_fails_the_signed_checkpoint(config: Path) -> None:
    """An attacker who edits entry 2 and recomputes every later hash still cannot re-sign the checkpoint."""
    from station.audit import entry_hash

    db_path = config.parent / "state/station.db"
    store = Store(db_path, ACTOR)
    entries = list(store.audit_entries())
    store.close()
    db = sqlite3.connect(db_path)
    db.executescript("DROP TRIGGER audit_no_update;")
    prev = entries[0].hash
    for entry in entries[1:]:
        data = dict(entry.data, forged=True) if entry.seq == 2 else entry.data
        body = entry.body() | {"data": data, "prev": prev}
        new_hash = entry_hash(body)
        db.execute(
            "UPDATE audit SET data = ?, prev = ?, hash = ? WHERE seq = ?", (json.dumps(data), prev, new_hash, entry.seq)
        )
        prev = new_hash
    db.commit()
    db.close()
    code, report = verify(config)
    assert code == 1
    assert report["first_bad_seq"] == 10
    assert "differs from its signed checkpoint" in str(report["problem"])


def test_export_writes_json_lines_since(config: Path) -> None:
    result = CliRunner().invoke(main, ["audit", "export", "--config", str(config)])
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert len(lines) == 24
    assert {"seq", "at", "kind", "station", "operator", "facility", "data", "prev", "hash"} <= set(lines[0])
    assert all(line["facility"] == ACTOR.facility for line in lines)
    later = CliRunner().invoke(main, ["audit", "export", "--since", lines[5]["at"], "--config", str(config)])
    assert 0 < len(later.output.splitlines()) <= 24


def test_verify_chain_over_an_empty_log() -> None:
    assert verify_chain([], [], None).ok
