"""A station that will not start says why in one line, exits 2, and writes nothing to its audit trail but the refusal
of a catalog: the whole configuration (each slot's driver and URL, both keys, the store, the catalog, the MQTT
section) is checked first."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from firmware_catalog.keys import generate_key, write_keypair
from station.cli import main
from station.demo import DemoWorld, build_demo_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> DemoWorld:
    return build_demo_world(tmp_path_factory.mktemp("startup") / "world")


def config(
    world: DemoWorld, tmp_path: Path, *, slot: str = "", station: str = "", catalog: str = "", mqtt: str = ""
) -> Path:
    write_keypair(generate_key(), tmp_path / "station")
    path = tmp_path / "station.toml"
    path.write_text(
        '[station]\nid = "st-1"\nregion = "North"\noperator = "op-1"\nfacility_approval = "SSC-1"\n'
        f'store = "state/station.db"\nkey = "station.key"\n{station}\n'
        f'[catalog]\nfolder = "{world.catalog_dir}"\nauthority_key = "{world.authority_pub}"\n{catalog}\n'
        + (slot or '[[slots]]\nname = "A1"\ndriver = "tcp"\nurl = "tcp://127.0.0.1:9"\n')
        + (f'\n[mqtt]\nurl = "mqtts://127.0.0.1:8883"\n{mqtt}\n' if mqtt else "")
    )
    return path


def audit_kinds(tmp_path: Path) -> list[str]:
    db = tmp_path / "state" / "station.db"
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    try:
        return [row[0] for row in conn.execute("SELECT kind FROM audit ORDER BY seq")]
    finally:
        conn.close()


CASES = {
    "an unknown driver": (dict(slot='[[slots]]\nname = "A1"\ndriver = "ftdi"\nurl = "/dev/ttyUSB0"\n'),
                          "slots[0] (A1): unknown jig driver 'ftdi'"),
    "a port out of range": (dict(slot='[[slots]]\nname = "A1"\ndriver = "tcp"\nurl = "tcp://127.0.0.1:99999"\n'),
                            "slots[0] (A1): transport URL 'tcp://127.0.0.1:99999'"),
    "a URL without a port": (dict(slot='[[slots]]\nname = "A1"\ndriver = "tcp"\nurl = "tcp://127.0.0.1"\n'),
                             "slots[0] (A1): transport URL 'tcp://127.0.0.1': no port"),
    "a bad USB URL": (dict(slot='[[slots]]\nname = "A1"\ndriver = "usb"\nurl = "usb://bad"\n'),
                      "slots[0] (A1): transport URL 'usb://bad'"),
    "a baud that is not a number": (
        dict(slot='[[slots]]\nname = "A1"\ndriver = "serial"\nurl = "/dev/ttyS9"\noptions = { baud = "fast" }\n'),
        "slots[0] (A1): option baud: Input should be a valid integer"),
    "an unknown driver option": (
        dict(slot='[[slots]]\nname = "A1"\ndriver = "tcp"\nurl = "tcp://127.0.0.1:9"\noptions = { windw = 4 }\n'),
        "slots[0] (A1): option windw: unknown key 'windw'"),
    "a missing station key": (dict(station='key = "nope.key"'), "[station] key in"),
    "a public key as the station key": (dict(station='key = "station.pub"'), "[station] key in"),
    "a private key as the authority": (dict(catalog=""), "[catalog] authority_key in"),
    "no catalog": (dict(catalog=""), "no acceptable catalog"),
    # ssl says "No such file or directory" or "[X509] PEM lib" without the file: the station names option and path.
    "a missing TLS CA file": (dict(mqtt='ca = "nope-ca.pem"'), "nope-ca.pem: No such file or directory"),
    "a TLS CA file that is no certificate": (dict(mqtt='ca = "station.pub"'), "station.pub: [X509"),
    "a missing client certificate": (dict(mqtt='cert = "nope.crt"\nkey = "station.key"'),
                                     "nope.crt (key "),
    "a missing MQTT password file": (dict(mqtt='password_file = "nope.pw"'), "nope.pw: No such file or directory"),
    # The bench page elsewhere than loopback only over TLS (docs/bench-page.md).
    "a bench page on the network without TLS": (dict(catalog='\n[web]\nlisten = "0.0.0.0:8080"'),
                                                "[web] in"),
    "a bench page certificate that does not load": (
        dict(catalog='\n[web]\nlisten = "0.0.0.0:8080"\ntls_cert = "station.pub"\ntls_key = "station.key"'),
        "tls_cert"),
    # Both listeners are parsed by one grammar (station/listen_address.py), and a wrong one is named with its key.
    "a bench page address that is no host:port": (dict(catalog='\n[web]\nlisten = "nonsense"'),
                                                  "web.listen: Value error, must be host:port"),
    "a metrics address with a port out of range": (dict(catalog='\n[metrics]\nlisten = "127.0.0.1:70000"'),
                                                   "metrics.listen: Value error, must be host:port"),
    "metrics on the network": (dict(catalog='\n[metrics]\nlisten = "0.0.0.0:9464"'), "not a loopback address"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_a_station_that_will_not_start_records_nothing(world: DemoWorld, tmp_path: Path, case: str) -> None:
    overrides, expected = CASES[case]
    path = config(world, tmp_path, **overrides)
    text = path.read_text()
    # TOML keeps the last of a repeated key nowhere: overrides replace the line they name.
    if case == "a missing station key" or case == "a public key as the station key":
        text = text.replace('key = "station.key"\n', "")
    if case == "a private key as the authority":
        text = text.replace(f'authority_key = "{world.authority_pub}"', 'authority_key = "station.key"')
    if case == "no catalog":
        text = text.replace(f'folder = "{world.catalog_dir}"', f'folder = "{tmp_path / "empty"}"')
    path.write_text(text)
    result = CliRunner().invoke(main, ["run", "--config", str(path), "--once", "--no-live"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    if case == "no catalog":
        # A refused catalog is the one thing recorded: one entry, complete in itself (a rollback leaves a trace).
        assert audit_kinds(tmp_path) == ["catalog_refused"]
    else:
        assert audit_kinds(tmp_path) == []
