"""Issue 15: the station's audit key in a PKCS#11 token (SoftHSM2), and its rotation without a gap in the record.

A handover entry names the new key with the new key's proof, the old key signs the checkpoint over it, and every
later checkpoint is the new key's; `audit verify` follows the chain from whichever of its keys is configured, and
refuses a checkpoint signed by a key the chain does not give for its entry."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from firmware_catalog.authority_handover import make_handover
from firmware_catalog.catalog_source import build_catalog
from firmware_catalog.errors import CatalogRefused
from firmware_catalog.key_reference import make_key_in_token, open_signer
from firmware_catalog.keys import fingerprint, generate_key, load_public_key, write_keypair
from firmware_catalog.reason import ReasonCode
from firmware_catalog.signer import KeySigner, Signer
from station.audit import sign_checkpoint, verify_chain
from station.cli import main
from station.config import load_config
from station.demo import CONFIG_DIR, device_id
from station.key_handover import HANDOVER_KIND
from station.mosquitto import Mosquitto
from station.pin_folder import PinFolder
from station.store import Store, StoreError
from tests.firmware_catalog.conftest import NOW, World
from tests.softhsm import SoftHsm
from tests.station import test_slot_faults
from tests.station.conftest import ACTOR
from tests.station.test_audit_anchors import deliver, record_jobs, write_config
from tests.station.test_slot_faults import HONEST, Bench, Events, honest_reflashed, import_order

bench = test_slot_faults.bench  # the fixture: simulated hubs over TCP, each in a process of its own


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def fill(store: Store, n: int) -> None:
    for i in range(n):
        store.audit("operator_signed_in", operator=f"op-{i}")


def verify(store: Store, anchor: Signer) -> tuple[bool, int | None, str]:
    report = verify_chain(store.audit_entries(), store.audit_checkpoints(), anchor.public_key())
    return report.ok, report.first_bad_seq, report.problem


@pytest.fixture
def token(softhsm: SoftHsm) -> SoftHsm:
    softhsm.init_token("station")
    return softhsm


def test_a_rotated_trail_verifies_from_its_first_key_and_from_its_last(tmp_path: Path, token: SoftHsm) -> None:
    first = KeySigner(generate_key())
    make_key_in_token(token.uri("station", "audit-2"), "--pkcs11")
    second = open_signer(token.uri("station", "audit-2"), "[station] key")
    store = Store(tmp_path / "s.db", ACTOR, key=first, checkpoint_every=4)
    fill(store, 6)
    handover = store.rotate_key(second)
    fill(store, 6)
    store.checkpoint()
    assert handover.kind == HANDOVER_KIND
    assert handover.data["old_fingerprint"] == fingerprint(first.public_key())
    assert handover.data["new_fingerprint"] == fingerprint(second.public_key())
    signers = {c.seq: c.key_fingerprint for c in store.audit_checkpoints()}
    assert signers[handover.seq] == fingerprint(first.public_key())  # the old key signs the handover
    assert {fp for seq, fp in signers.items() if seq > handover.seq} == {fingerprint(second.public_key())}
    assert verify(store, first) == (True, None, "")
    assert verify(store, second) == (True, None, "")
    stranger = KeySigner(generate_key())
    ok, seq, problem = verify(store, stranger)
    assert (ok, seq) == (False, handover.seq)
    assert "is not in the audit's chain of keys" in problem
    store.close()


def test_the_retired_key_may_not_sign_again(tmp_path: Path) -> None:
    first, second = KeySigner(generate_key()), KeySigner(generate_key())
    store = Store(tmp_path / "s.db", ACTOR, key=first, checkpoint_every=100)
    fill(store, 3)
    store.rotate_key(second)
    store.close()
    stale = Store(tmp_path / "s.db", ACTOR, key=first, checkpoint_every=100)
    problem = stale.audit_log.key_problem()
    assert problem is not None
    assert "is not the audit key in force" in problem
    fill(stale, 1)
    with pytest.raises(StoreError, match="is not the audit key in force"):
        stale.checkpoint()
    with pytest.raises(StoreError, match="is not the audit key in force"):
        stale.rotate_key(KeySigner(generate_key()))
    stale.close()


def test_a_checkpoint_by_a_key_the_chain_does_not_give_there_fails(tmp_path: Path) -> None:
    first, second = KeySigner(generate_key()), KeySigner(generate_key())
    store = Store(tmp_path / "s.db", ACTOR, key=first, checkpoint_every=100)
    fill(store, 3)
    handover = store.rotate_key(second)
    fill(store, 3)
    last = store.checkpoint()
    assert last is not None
    # The retired key signs the newest entry, as a thief of it would: a valid signature by the wrong key.
    (entry,) = [e for e in store.audit_entries() if e.seq == last]
    at = "2026-12-06T10:00:00.000Z"
    forged = sign_checkpoint(first, ACTOR.station, last, entry.hash, at)
    db = sqlite3.connect(tmp_path / "s.db")
    db.execute(
        "UPDATE audit_checkpoints SET at = ?, key_fingerprint = ?, signature = ? WHERE seq = ?",
        (at, fingerprint(first.public_key()), forged, last),
    )
    db.commit()
    ok, seq, problem = verify(store, first)
    assert (ok, seq) == (False, last)
    assert f"is signed by key {fingerprint(first.public_key())[:16]}, which the chain" in problem
    # Without the old key's checkpoint the handover itself is unproven.
    db.execute("DELETE FROM audit_checkpoints WHERE seq = ?", (handover.seq,))
    db.commit()
    db.close()
    ok, seq, problem = verify(store, second)
    assert (ok, seq, problem) == (
        False,
        handover.seq,
        f"the key handover at entry {handover.seq} has no checkpoint signed by the old key",
    )
    store.close()


def test_a_station_signs_in_the_token_and_its_key_is_rotated(bench: Bench, token: SoftHsm) -> None:
    """End to end: `reflash run` with its audit key in the token flashes a hub; the key is rotated to another token
    key; the station refuses to start with the retired key, runs with the new one, and the trail verifies."""
    for name in ("audit-1", "audit-2"):
        made = run("catalog", "keygen", "--pkcs11", token.uri("station", name), "--out", token.root / name)
        assert made.exit_code == 0, made.output
        assert not (token.root / f"{name}.key").exists()
    bench.hub("H", 1, HONEST)
    config = bench.config()
    text = config.read_text()
    assert 'key = "keys/station.key"' in text
    config.write_text(text.replace('key = "keys/station.key"', f'key = "{token.uri("station", "audit-1")}"'))
    import_order(config, [device_id(1, 1)])

    process = bench.station(config, "--once")
    events = Events(process)
    events.wait_for("job_finished", within=90, outcome="REFLASHED")
    assert process.wait(60) == 0, process.stderr.read() if process.stderr else ""
    honest_reflashed(bench, config)
    before = run("audit", "verify", "--config", config, "--json")
    assert before.exit_code == 0, before.output
    store = load_config(config).open_store()
    first_key = store.public_key
    assert first_key is not None
    assert {c.key_fingerprint for c in store.audit_checkpoints()} == {fingerprint(first_key)}
    store.close()

    rotated = run("audit", "rotate-key", "--config", config, "--new-key", token.uri("station", "audit-2"))
    assert rotated.exit_code == 0, rotated.output
    assert "audit key handed over at entry" in rotated.output
    stale = bench.station(config, "--once")
    assert stale.wait(60) == 2
    assert stale.stderr is not None
    assert "is not the audit key in force" in stale.stderr.read().decode()
    writer = CliRunner().invoke(main, ["orders", "dispatch", "DCC-FAULTS", "--config", str(config)])
    assert writer.exit_code == 2
    assert f"{config}: [station] key: the station key" in writer.stderr
    assert "is not the audit key in force" in writer.stderr

    config.write_text(config.read_text().replace("object=audit-1", "object=audit-2"))
    again = bench.station(config, "--once")
    Events(again).wait_for("station_stopped", within=90)
    assert again.wait(60) == 0
    for configured in ("audit-2", "audit-1"):  # entered at the newest key, then at the first
        config.write_text(config.read_text().replace("object=audit-2", f"object={configured}"))
        report = run("audit", "verify", "--config", config)
        assert report.exit_code == 0, report.output
        assert "audit trail intact" in report.output
    # An auditor with only a public key of the chain, and the token not opened: a wrong PIN would not matter.
    config.write_text(config.read_text().replace(f"file:{token.pin_file}", "file:/nonexistent"))
    public_only = run("audit", "verify", "--config", config, "--public-key", token.root / "audit-1.pub", "--json")
    assert public_only.exit_code == 0, public_only.output
    assert json.loads(public_only.output)["checkpoints"] >= 3
    write_keypair(generate_key(), token.root / "stranger")
    stranger = run("audit", "verify", "--config", config, "--public-key", token.root / "stranger.pub")
    assert stranger.exit_code == 1
    assert "is not in the audit's chain of keys" in stranger.output
    store = load_config(config).open_store(signing=False)
    kinds = [e.kind for e in store.audit_entries()]
    assert kinds.count(HANDOVER_KIND) == 1
    assert kinds.index(HANDOVER_KIND) < len(kinds) - 1  # the second run wrote after the handover
    store.close()


def rebuild_catalog(bench: Bench, serial: int, key: str, *extra: str | Path) -> Result:
    """The demo's catalog source with another serial, built over the station's catalog folder by `key`."""
    source = bench.world.workdir / f"source-{serial}.toml"
    text = (CONFIG_DIR / "catalog/example.toml").read_text()
    source.write_text(text.replace("serial = 1\n", f"serial = {serial}\n", 1))
    return run("catalog", "build", source, "--key", key, "--out", bench.world.catalog_dir,
               "--base", bench.world.workdir, *extra)  # fmt: skip


def test_the_catalog_authority_moves_into_a_token_and_stations_follow(bench: Bench, token: SoftHsm) -> None:
    """End to end: the authority key (a file) hands over to a key made in the token; a station configured with the
    old key accepts the new authority's catalog, flashes under it and pins the new key; the old key's catalog, with a
    higher serial, is then refused as a rollback."""
    token.init_token("authority")
    new_uri = token.uri("authority", "catalog-2027")
    pub = token.root / "authority-2027"
    assert run("catalog", "keygen", "--pkcs11", new_uri, "--out", pub).exit_code == 0
    old_key = bench.world.key("authority.key")
    handover = token.root / "handover.json"
    signed = run("catalog", "handover", "--key", old_key, "--new-key", f"{pub}.pub", "--out", handover, "--json")
    assert signed.exit_code == 0, signed.output
    assert json.loads(signed.output)["new_fingerprint"] == fingerprint(load_public_key(f"{pub}.pub"))
    built = rebuild_catalog(bench, 2, new_uri, "--handover", handover)
    assert built.exit_code == 0, built.output

    bench.hub("H", 1, HONEST)
    config = bench.config()  # [catalog] authority_key is still the old key's .pub
    import_order(config, [device_id(1, 1)])
    process = bench.station(config, "--once")
    events = Events(process)
    accepted = events.wait_for("catalog", within=60)
    assert (accepted["accepted"], accepted["serial"]) == (True, 2), accepted
    events.wait_for("job_finished", within=90, outcome="REFLASHED")
    assert process.wait(60) == 0
    honest_reflashed(bench, config)
    store = load_config(config).open_store()
    assert [fingerprint(k) for k in store.pinned_catalog.authority_chain()] == [
        fingerprint(load_public_key(bench.world.authority_pub)),
        fingerprint(load_public_key(f"{pub}.pub")),
    ]
    (entry,) = [e for e in store.audit_entries() if e.kind == "catalog_accepted"]
    assert entry.data["authority_handover"]["new"] == fingerprint(load_public_key(f"{pub}.pub"))
    store.close()

    assert rebuild_catalog(bench, 9, str(old_key)).exit_code == 0  # the old key alone, a higher serial
    refused = bench.station(config, "--once")
    assert refused.wait(60) == 2
    assert refused.stderr is not None
    assert "CATALOG_ROLLBACK" in refused.stderr.read().decode()


def test_token_keys_at_the_command_line(token: SoftHsm, tmp_path: Path) -> None:
    made = run("catalog", "keygen", "--pkcs11", token.uri("station", "maker"), "--out", tmp_path / "maker", "--json")
    assert made.exit_code == 0, made.output
    assert json.loads(made.output)["public_key"] == f"{tmp_path / 'maker'}.pub"
    assert not (tmp_path / "maker.key").exists()
    (tmp_path / "body.bin").write_bytes(b"firmware" * 500)
    image_args: list[str | Path] = ["--manufacturer", "121D", "--image-type", "0000", "--version", "01020000",
                                    "--min-hw", "1111", "--max-hw", "1211", tmp_path / "body.bin"]  # fmt: skip
    signed = run("catalog", "sign-image", "--key", token.uri("station", "maker"), *image_args, tmp_path / "i.bin")
    assert signed.exit_code == 0, signed.output
    checked = run("catalog", "verify", tmp_path / "i.bin", "--key", f"{tmp_path / 'maker'}.pub")
    assert checked.exit_code == 0, checked.output
    wrong = tmp_path / "wrong-pin"
    wrong.write_text("0000")
    refused = CliRunner().invoke(
        main, ["catalog", "sign-image", "--key", token.uri("station", "maker", wrong),
               *[str(a) for a in image_args], str(tmp_path / "j.bin")],
    )  # fmt: skip
    assert refused.exit_code == 2
    assert refused.stderr.strip() == "error: --key: wrong PIN for token 'station'"
    assert not (tmp_path / "j.bin").exists()
    again = run("catalog", "keygen", "--pkcs11", token.uri("station", "maker"), "--out", tmp_path / "other")
    assert again.exit_code == 2
    assert "already holds a key for object 'maker'" in again.stderr


def test_the_command_line_tools_pin_follows_the_authority_handover(tmp_path: Path) -> None:
    """`jig flash`, `catalog check` and `catalog verify --catalog` share a pin per configured authority key: it
    takes on the new authority with the handover and refuses the old key's catalogs from then on."""
    old, new = KeySigner(generate_key()), KeySigner(generate_key())
    world = World(root=tmp_path, authority=generate_key())
    world.trust("maker", "121D")
    world.image(version="01020000")

    def build(signer: Signer, serial: int, handover: bytes | None = None) -> Path:
        world.serial = serial
        build_catalog(world.write_source(), signer, tmp_path / f"c{serial}", NOW, handover=handover)
        return tmp_path / f"c{serial}"

    pins = PinFolder(tmp_path / "pins")
    assert pins.load(build(old, 1), old.public_key(), NOW).serial == 1
    assert pins.load(build(new, 2, make_handover(old, new.public_key())), old.public_key(), NOW).serial == 2
    assert pins.load(build(new, 3), old.public_key(), NOW).serial == 3  # no handover needed any more
    with pytest.raises(CatalogRefused) as refused:
        pins.load(build(old, 4), old.public_key(), NOW)
    assert refused.value.code is ReasonCode.CATALOG_ROLLBACK
    record = json.loads(pins.file_for(old.public_key()).read_text())
    assert (record["serial"], len(record["authority_chain"])) == (3, 2)


def test_a_station_whose_token_refuses_it_says_why_in_one_line(bench: Bench, token: SoftHsm) -> None:
    made = run("catalog", "keygen", "--pkcs11", token.uri("station", "audit"), "--out", token.root / "audit")
    assert made.exit_code == 0, made.output
    wrong = token.root / "wrong-pin"
    wrong.write_text("0000\n")
    config = bench.config()
    cases = {
        token.uri("station", "audit", wrong): "wrong PIN for token 'station'",
        token.uri("missing", "audit"): "token 'missing' not found in PKCS#11 module",
        f"pkcs11:token=station;object=audit?pin-value={token.pin_file.read_text().strip()}": "pin-value is refused",
    }
    text = config.read_text()
    for uri, expected in cases.items():
        config.write_text(text.replace('key = "keys/station.key"', f'key = "{uri}"'))
        result = CliRunner().invoke(main, ["run", "--config", str(config), "--once", "--no-live"])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(f"error: [station] key in {config}: "), result.stderr
        assert expected in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert token.pin_file.read_text().strip() not in result.stderr
        assert not (config.parent / "state" / "station.db").exists()  # nothing recorded


async def test_anchors_signed_before_and_after_a_rotation_all_hold(
    tmp_path: Path, private_mosquitto: Mosquitto
) -> None:
    """The DSP's anchors are checkpoints: those the old key signed before the handover, the handover's own, and the
    new key's after it are all checked by `audit verify --anchors`, from either key of the chain."""
    config = write_config(tmp_path)
    write_keypair(generate_key(), tmp_path / "station-2")
    store = load_config(config).open_store()
    record_jobs(store, 1, 6)
    handover = store.rotate_key(open_signer(tmp_path / "station-2.key", "--new-key"))
    record_jobs(store, 7, 5)  # to entry 23: the stop's checkpoint is not also a periodic one
    assert store.checkpoint() is not None
    await deliver(store, private_mosquitto, tmp_path / "smi.db")
    store.close()
    out = tmp_path / "anchors.json"
    export = run("sim", "dsp-bridge", "--db", tmp_path / "smi.db", "--anchors-out", out)
    assert export.exit_code == 0, export.output
    signers = {a["seq"]: a["key_fingerprint"] for a in json.loads(out.read_text())["anchors"]}
    assert len(set(signers.values())) == 2
    assert signers[handover.seq] == fingerprint(load_public_key(tmp_path / "station.pub"))
    for configured in ("station.key", "station-2.key"):
        config.write_text(re.sub(r'key = "[^"]+"', f'key = "{configured}"', config.read_text(), count=1))
        checked = run("audit", "verify", "--json", "--config", config, "--anchors", out)
        assert checked.exit_code == 0, checked.output
        assert json.loads(checked.output)["anchors"]["findings"] == []
