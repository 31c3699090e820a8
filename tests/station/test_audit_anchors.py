"""The audit chain anchored at the DSP: a station's signed checkpoints go through the outbox and a real Mosquitto to a
real DSP bridge, which keeps them; `reflash audit verify --anchors` then catches what local verification cannot: a
cut tail, a history rewritten and signed again, a database replaced (with the same key or another)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from firmware_catalog.keys import fingerprint, generate_key, load_private_key, write_keypair
from simulators.dsp_bridge import DspBridge
from station.audit import AuditEntry, Checkpoint, entry_hash, sign_checkpoint
from station.cli import main
from station.config import MqttConfig, load_config
from station.messages import audit_checkpoint
from station.mosquitto import Mosquitto, free_port
from station.reporter import Reporter
from station.store import AUDIT_CHECKPOINT, Store
from tests.station.conftest import ACTOR, hub_id
from tests.station.test_reporting import eventually

REGION = "North"


def write_config(folder: Path, key: str = "station") -> Path:
    if not (folder / f"{key}.key").exists():
        write_keypair(generate_key(), folder / key)
    path = folder / "station.toml"
    path.write_text(
        f"""[station]
id = "{ACTOR.station}"
region = "{REGION}"
operator = "{ACTOR.operator}"
facility_approval = "{ACTOR.facility}"
store = "state/station.db"
key = "{key}.key"
checkpoint_every = 5

[catalog]
folder = "catalog"
authority_key = "authority.pub"
"""
    )
    if not (folder / "authority.pub").exists():
        write_keypair(generate_key(), folder / "authority")
    return path


def record_jobs(store: Store, first: int, count: int) -> None:
    """Jobs started and decided: two audit entries each, through the store as the station writes them."""
    for n in range(first, first + count):
        job_id = store.start_job(chf_id=hub_id(n), gpf_id=None, order_ref=None, slot="A1", identity={}).id
        store.record_event(job_id, "decision", code="OK")


def anchor_rows(store: Store) -> dict[str, int]:
    rows = store.outbox.messages(kind=AUDIT_CHECKPOINT)
    return {state: sum(1 for row in rows if row.state == state) for state in ("pending", "at_broker", "confirmed")}


async def deliver(store: Store, broker: Mosquitto, smi: Path) -> None:
    """Run a reporter over the station's store and a DSP bridge until the bridge has acked every checkpoint."""
    bridge = DspBridge(broker.url, smi)
    bridge_task = asyncio.create_task(bridge.run())
    await asyncio.wait_for(bridge.subscribed.wait(), 10)
    birth = {"software_version": "test", "facility": ACTOR.facility, "operator": ACTOR.operator, "slots": 1}
    reporter = Reporter(store, MqttConfig(url=broker.url, republish_after_s=1.0), station=ACTOR.station,
                        region=REGION, birth=birth)  # fmt: skip
    reporter_task = asyncio.create_task(reporter.run())
    try:
        await eventually(lambda: anchor_rows(store)["confirmed"] == len(store.audit_checkpoints()), what="anchors")
    finally:
        reporter.stop()
        bridge.stop()
        await asyncio.wait_for(asyncio.gather(reporter_task, bridge_task), 15)
        bridge.smi.close()


@dataclasses.dataclass
class Anchored:
    config: Path
    smi: Path
    anchors: Path  # what the bridge exported
    seqs: list[int]  # the entries its anchors cover

    @property
    def last_anchor(self) -> int:
        return self.seqs[-1]

    def first_anchor_after(self, seq: int) -> int:
        return next(s for s in self.seqs if s > seq)


@pytest.fixture
async def anchored(tmp_path: Path, private_mosquitto: Mosquitto) -> Anchored:
    """A station whose 24 jobs (48 entries and more) are checkpointed every 5 entries and at its stop, every
    checkpoint at the DSP bridge, and the bridge's anchors exported to a file. (The bridge's acks are audit
    entries too, and bring checkpoints of their own: the anchors are what the bridge holds when it is stopped.)"""
    config = write_config(tmp_path)
    store = load_config(config).open_store()
    record_jobs(store, 1, 24)
    assert store.checkpoint() is not None
    await deliver(store, private_mosquitto, tmp_path / "smi.db")
    local = [checkpoint.seq for checkpoint in store.audit_checkpoints()]
    store.close()
    out = tmp_path / "anchors.json"
    export = CliRunner().invoke(main, ["sim", "dsp-bridge", "--db", str(tmp_path / "smi.db"), "--anchors-out",
                                       str(out)])  # fmt: skip
    assert export.exit_code == 0, export.output
    seqs = sorted(anchor["seq"] for anchor in json.loads(out.read_text())["anchors"])
    assert seqs == local  # each checkpoint the station signed, once
    return Anchored(config, tmp_path / "smi.db", out, seqs)


def verify(config: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(main, ["audit", "verify", "--json", "--config", str(config), *extra])
    return result.exit_code, json.loads(result.output)


def database(config: Path) -> sqlite3.Connection:
    """The station's database as root opens it: the append-only triggers are no obstacle."""
    db = sqlite3.connect(config.parent / "state/station.db")
    db.executescript("DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete;")
    return db


def test_an_untouched_chain_holds_every_anchor(anchored: Anchored) -> None:
    document = json.loads(anchored.anchors.read_text())
    assert document["format"] == "reflash.anchors/1"
    assert anchored.seqs[:9] == [5, 10, 15, 20, 25, 30, 35, 40, 45]
    code, report = verify(anchored.config, "--anchors", str(anchored.anchors))
    assert code == 0, report
    assert report["anchors"]["anchors"] == len(anchored.seqs)
    assert report["anchors"]["anchored_to"] == anchored.last_anchor
    assert report["anchors"]["findings"] == []
    assert report["anchors"]["signatures_checked"] is True


def test_a_cut_tail_that_local_verification_misses_is_caught(anchored: Anchored) -> None:
    # Root cuts the last 12 entries and the checkpoints that covered them: the local chain is consistent again.
    keep = anchored.last_anchor - 12
    db = database(anchored.config)
    db.execute("DELETE FROM audit WHERE seq > ?", (keep,))
    db.execute("DELETE FROM audit_checkpoints WHERE seq > ?", (keep,))
    db.commit()
    db.close()
    code, alone = verify(anchored.config)
    assert (code, alone["ok"]) == (0, True)  # what the station alone can tell
    code, report = verify(anchored.config, "--anchors", str(anchored.anchors))
    assert code == 1
    findings = report["anchors"]["findings"]
    first_cut = anchored.first_anchor_after(keep)
    assert findings[0]["seq"] == first_cut
    assert (
        f"the local trail ends at entry {keep}: entries {keep + 1}..{first_cut} at least were cut"
        in (findings[0]["problem"])
    )
    assert report["anchors"]["anchored_to"] == max(s for s in anchored.seqs if s <= keep)


def rewrite_history(config: Path, seq: int, change: dict[str, Any]) -> None:
    """Root with the station's key: change one entry's data, chain every later entry again and sign every
    checkpoint again, so that the station's own verification passes."""
    key = load_private_key(config.parent / "station.key")
    db = database(config)
    db.row_factory = sqlite3.Row
    rows = db.execute("SELECT * FROM audit ORDER BY seq").fetchall()
    prev = rows[seq - 2]["hash"] if seq > 1 else "0" * 64
    hashes: dict[int, str] = {}
    for row in rows[seq - 1 :]:
        data = json.loads(row["data"]) | (change if row["seq"] == seq else {})
        entry = AuditEntry(row["seq"], row["at"], row["kind"], row["station"], row["operator"], row["facility"], data,
                           prev, "")  # fmt: skip
        digest = entry_hash(entry.body())
        db.execute("UPDATE audit SET data = ?, prev = ?, hash = ? WHERE seq = ?",
                   (json.dumps(data), prev, digest, row["seq"]))  # fmt: skip
        hashes[row["seq"]] = prev = digest
    for checkpoint in db.execute("SELECT seq, at FROM audit_checkpoints WHERE seq >= ?", (seq,)).fetchall():
        signature = sign_checkpoint(key, ACTOR.station, checkpoint["seq"], hashes[checkpoint["seq"]], checkpoint["at"])
        db.execute("UPDATE audit_checkpoints SET hash = ?, signature = ? WHERE seq = ?",
                   (hashes[checkpoint["seq"]], signature, checkpoint["seq"]))  # fmt: skip
    db.commit()
    db.close()


def test_a_history_rewritten_and_signed_again_is_caught(anchored: Anchored) -> None:
    rewrite_history(anchored.config, 13, {"code": "REFUSED"})
    code, alone = verify(anchored.config)
    assert (code, alone["ok"]) == (0, True)
    code, report = verify(anchored.config, "--anchors", str(anchored.anchors))
    assert code == 1
    findings = report["anchors"]["findings"]
    assert findings[0]["seq"] == 15  # the first anchor after the edit
    assert "entry 15 differs from the DSP's anchor" in findings[0]["problem"]
    assert "history was rewritten" in findings[0]["problem"]
    assert report["anchors"]["anchored_to"] == 10
    result = CliRunner().invoke(main, ["audit", "verify", "--config", str(anchored.config), "--anchors",
                                       str(anchored.anchors)])  # fmt: skip
    assert result.exit_code == 1
    assert "anchors: entry 15 differs from the DSP's anchor (local hash " in result.output


def test_a_replaced_database_with_the_same_key_is_caught(anchored: Anchored) -> None:
    (anchored.config.parent / "state").rename(anchored.config.parent / "state-old")
    store = load_config(anchored.config).open_store()
    record_jobs(store, 100, 30)  # a longer history than the one replaced, signed with the same key
    store.checkpoint()
    store.close()
    code, alone = verify(anchored.config)
    assert (code, alone["ok"]) == (0, True)
    code, report = verify(anchored.config, "--anchors", str(anchored.anchors))
    assert code == 1
    assert report["anchors"]["findings"][0]["seq"] == 5
    assert "entry 5 differs from the DSP's anchor" in report["anchors"]["findings"][0]["problem"]
    assert report["anchors"]["anchored_to"] is None


def test_a_replaced_database_with_another_key_is_caught(anchored: Anchored) -> None:
    (anchored.config.parent / "state").rename(anchored.config.parent / "state-old")
    config = write_config(anchored.config.parent, key="new-station")
    store = load_config(config).open_store()
    record_jobs(store, 100, 30)
    store.checkpoint()
    new_key = store.public_key
    store.close()
    assert new_key is not None
    code, report = verify(config, "--anchors", str(anchored.anchors))
    assert code == 1
    finding = report["anchors"]["findings"][0]
    assert finding["seq"] == 5
    assert "not by the station's key" in finding["problem"]
    assert f"({fingerprint(new_key)[:16]}...)" in finding["problem"]


def test_anchors_of_other_stations_only_are_no_proof(anchored: Anchored, tmp_path: Path) -> None:
    document = json.loads(anchored.anchors.read_text())
    for anchor in document["anchors"]:
        anchor["station"] = "st-elsewhere"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(document))
    code, report = verify(anchored.config, "--anchors", str(other))
    assert code == 1
    assert report["anchors"]["findings"][0]["problem"] == (
        f"the anchors hold nothing of station {ACTOR.station} (stations: st-elsewhere)"
    )


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("not json {", "not JSON"),
        ('{"anchors": []}', "not an anchors document (format None, expected 'reflash.anchors/1')"),
        ('{"format": "reflash.anchors/1", "anchors": [{"seq": 5}]}', "anchors[0]."),
    ],
)
def test_anchors_that_are_not_an_anchors_document_are_bad_input(
    anchored: Anchored, tmp_path: Path, text: str, said: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    result = CliRunner().invoke(main, ["audit", "verify", "--config", str(anchored.config), "--anchors", str(bad)])
    assert result.exit_code == 2
    assert f"error: --anchors {bad}: " in result.output
    assert said in result.output


def test_an_anchors_url_that_does_not_answer_is_said(anchored: Anchored) -> None:
    url = f"http://127.0.0.1:{free_port()}/anchors"
    result = CliRunner().invoke(main, ["audit", "verify", "--config", str(anchored.config), "--anchors", url])
    assert result.exit_code == 1
    assert f"error: --anchors {url}: no answer: " in result.output


def test_verify_fetches_the_anchors_from_the_bridge_over_http(anchored: Anchored, private_mosquitto: Mosquitto) -> None:
    bridge = subprocess.Popen(
        [sys.executable, "-c", "from station.cli import main; main()", "sim", "dsp-bridge", "--broker",
         private_mosquitto.url, "--db", str(anchored.smi), "--anchors-listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert bridge.stderr is not None
        lines = [bridge.stderr.readline().decode() for _ in range(2)]
        url = lines[1].split("anchors: ", 1)[1].strip()
        code, report = verify(anchored.config, "--anchors", url)
        assert code == 0, report
        assert report["anchors"]["anchored_to"] == anchored.last_anchor
        nowhere = url.replace("/anchors", "/nothing")
        result = CliRunner().invoke(main, ["audit", "verify", "--config", str(anchored.config), "--anchors", nowhere])
        assert result.exit_code == 2
        assert f"error: --anchors {nowhere}: the server answered 404 Not Found" in result.output
    finally:
        bridge.terminate()
        bridge.wait(10)
        if bridge.stderr is not None:
            bridge.stderr.close()


def test_the_bridge_keeps_every_anchor_and_replaces_none(tmp_path: Path) -> None:
    """A station that rewrites its history and publishes the new checkpoint leaves the old anchor standing; a copy
    of one already held is acked `duplicate`; one that breaks the schema is rejected and not kept."""
    key = generate_key()
    bridge = DspBridge("mqtt://127.0.0.1:1", tmp_path / "smi.db")

    def anchor(hash_hex: str) -> dict[str, Any]:
        signature = sign_checkpoint(key, ACTOR.station, 10, hash_hex, "2026-12-06T10:00:00.000Z")
        return audit_checkpoint(
            Checkpoint(10, hash_hex, "2026-12-06T10:00:00.000Z", ACTOR.station, fingerprint(key.public_key()),
                       signature), str(uuid.uuid4()), region=REGION,
        )  # fmt: skip

    first, rewritten = anchor("a" * 64), anchor("b" * 64)
    where = f"reflash/v1/{REGION}/{ACTOR.station}/checkpoint"
    broken = {**anchor("c" * 64), "signature": "xyz"}
    acks = bridge.handle([(where, json.dumps(m).encode()) for m in (first, rewritten, first, broken)])
    assert [(t.rsplit("/", 1)[1], a["result"]) for t, a in acks] == [
        ("ack", "rejected"), ("ack", "applied"), ("ack", "applied"), ("ack", "duplicate")
    ]  # fmt: skip
    held = bridge.smi.anchors(ACTOR.station)
    assert [(a["seq"], a["hash"]) for a in held] == [(10, "a" * 64), (10, "b" * 64)]
    with pytest.raises(sqlite3.IntegrityError, match="never removed"):
        bridge.smi._db.execute("DELETE FROM anchors")
    bridge.smi.close()
