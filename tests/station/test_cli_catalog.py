"""`reflash catalog ...` as scripts use it: exit codes, JSON keys, files written."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from station.cli import main

SAMPLE = Path(__file__).parents[1] / "firmware_catalog/data/duis-sr11.1-upgrade-image.bin"
INSPECT_KEYS = {
    "manufacturer",
    "image_type",
    "file_version",
    "min_hardware_version",
    "max_hardware_version",
    "header_string",
    "total_size",
    "manufacturer_image_size",
    "manufacturer_image_sha256",
    "upgrade_image_sha256",
    "control",
}


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def signed(tmp_path: Path) -> Path:
    assert run("catalog", "keygen", "--out", tmp_path / "maker").exit_code == 0
    (tmp_path / "body.bin").write_bytes(os.urandom(5000))
    result = run(
        "catalog", "sign-image", "--key", tmp_path / "maker.key", "--manufacturer", "121d", "--image-type", "0000",
        "--version", "ACDCACDC", "--min-hw", "1111", "--max-hw", "1211", "--header-string", "bench test",
        "--control", "1", tmp_path / "body.bin", tmp_path / "image.bin",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return tmp_path / "image.bin"


def test_keygen_writes_pkcs8_0600_and_spki(tmp_path: Path) -> None:
    result = run("catalog", "keygen", "--out", tmp_path / "k")
    assert result.exit_code == 0
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600
    assert (tmp_path / "k.key").read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert (tmp_path / "k.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    again = run("catalog", "keygen", "--out", tmp_path / "k")
    assert again.exit_code == 2
    assert "refusing to overwrite" in again.output


def test_inspect_json_contract(signed: Path) -> None:
    result = run("catalog", "inspect", signed, "--json")
    assert result.exit_code == 0
    fields = json.loads(result.output)
    assert set(fields) >= INSPECT_KEYS
    assert fields["manufacturer"] == "121D"
    assert fields["file_version"] == "ACDCACDC"
    assert fields["header_string"] == "bench test"
    assert fields["control"] == 1
    assert fields["manufacturer_image_size"] == 5000
    assert fields["total_size"] == 5126
    assert fields["upgrade_image_sha256"] == hashlib.sha256(signed.read_bytes()).hexdigest()


def test_inspect_sample_json(tmp_path: Path) -> None:
    fields = json.loads(run("catalog", "inspect", SAMPLE, "--json").output)
    assert fields["header_string"] == "I am a GFI ESME[] firmware image"
    assert (fields["min_hardware_version"], fields["max_hardware_version"]) == ("1111", "1211")


def test_inspect_table_without_json(signed: Path) -> None:
    result = run("catalog", "inspect", signed)
    assert result.exit_code == 0
    assert "ACDCACDC" in result.output
    assert "manufacturer_image_sha256" in result.output


def test_inspect_malformed_names_field_and_offset(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(SAMPLE.read_bytes()[:100])
    result = run("catalog", "inspect", bad)
    assert result.exit_code == 2
    assert "total_size at byte 52" in result.output


def test_verify_valid_and_invalid(signed: Path, tmp_path: Path) -> None:
    ok = run("catalog", "verify", signed, "--key", tmp_path / "maker.pub", "--json")
    assert ok.exit_code == 0
    assert json.loads(ok.output)["valid"] is True
    run("catalog", "keygen", "--out", tmp_path / "other")
    bad = run("catalog", "verify", signed, "--key", tmp_path / "other.pub", "--json")
    assert bad.exit_code == 1
    verdict = json.loads(bad.output)
    assert (verdict["valid"], verdict["reason"]) == (False, "SIGNATURE_INVALID")
    assert verdict["message"]


def test_verify_sample_is_refused(tmp_path: Path) -> None:
    run("catalog", "keygen", "--out", tmp_path / "ours")
    result = run("catalog", "verify", SAMPLE, "--key", tmp_path / "ours.pub", "--json")
    assert result.exit_code == 1
    assert json.loads(result.output)["reason"] == "SIGNATURE_INVALID"


def test_verify_malformed_image(tmp_path: Path) -> None:
    run("catalog", "keygen", "--out", tmp_path / "k")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 200)
    result = run("catalog", "verify", junk, "--key", tmp_path / "k.pub", "--json")
    assert result.exit_code == 1
    verdict = json.loads(result.output)
    assert (verdict["reason"], verdict["field"], verdict["offset"]) == ("MALFORMED_IMAGE", "magic", 0)


def test_sign_image_refuses_bad_codes(tmp_path: Path) -> None:
    run("catalog", "keygen", "--out", tmp_path / "k")
    (tmp_path / "b").write_bytes(b"x")
    result = CliRunner().invoke(
        main,
        ["catalog", "sign-image", "--key", str(tmp_path / "k.key"), "--manufacturer", "12G4", "--image-type", "0",
         "--version", "1", "--min-hw", "1", "--max-hw", "1", str(tmp_path / "b"), str(tmp_path / "o")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "manufacturer must be 4 hex digits" in result.output
    assert not (tmp_path / "o").exists()


def catalog_source(body: bytes, *, serial: int, key_lines: str = "") -> str:
    """A catalog source trusting maker.pub for 121D, with one entry for image.bin (whose Manufacturer Image is
    `body`); `key_lines` adds fields to the key."""
    return f"""serial = {serial}
valid_days = 10
[[keys]]
id = "maker"
public_key = "maker.pub"
manufacturers = ["121D"]
{key_lines}
[[entries]]
cpl_id = "CPL-1"
manufacturer = "121D"
model = "0000"
firmware_version = "ACDCACDC"
min_hardware_version = "1111"
max_hardware_version = "1211"
manufacturer_image_sha256 = "{hashlib.sha256(body).hexdigest()}"
chts_version = "V1.3"
installation_validity_end = 2031-01-01
maintenance_end = 2033-01-01
upgrade_from = ["01000000"]
status = "active"
certificate_expiry = 2030-01-01
image = "image.bin"
"""


def test_build_and_check_through_the_cli(tmp_path: Path, signed: Path) -> None:
    run("catalog", "keygen", "--out", tmp_path / "authority")
    body = (tmp_path / "body.bin").read_bytes()
    (tmp_path / "source.toml").write_text(catalog_source(body, serial=7))
    built = run("catalog", "build", tmp_path / "source.toml", "--key", tmp_path / "authority.key",
                "--out", tmp_path / "cat", "--json")  # fmt: skip
    assert built.exit_code == 0, built.output
    assert json.loads(built.output)["serial"] == 7
    hub = {"manufacturer": "121D", "model": "0000", "hardware_version": "1200", "firmware_version": "01000000"}
    args: list[str | Path] = [
        "catalog",
        "check",
        "--catalog",
        tmp_path / "cat",
        "--authority",
        tmp_path / "authority.pub",
    ]
    flash = run(*args, "--hub", json.dumps(hub), "--json")
    assert flash.exit_code == 0, flash.output
    decision = json.loads(flash.output)
    assert (decision["decision"], decision["code"]) == ("flash", "OK")
    assert decision["target"]["firmware_version"] == "ACDCACDC"
    refused = run(*args, "--hub", json.dumps(hub | {"hardware_version": "2000"}), "--json")
    assert refused.exit_code == 1
    assert json.loads(refused.output)["code"] == "HARDWARE_OUT_OF_RANGE"
    # The catalog's trusted keys: the image verifies under the maker key, bound to 121D.
    verified = run("catalog", "verify", signed, "--catalog", tmp_path / "cat",
                   "--authority", tmp_path / "authority.pub", "--json")  # fmt: skip
    assert verified.exit_code == 0, verified.output
    # The wrong authority: the catalog is refused, so is every hub.
    run("catalog", "keygen", "--out", tmp_path / "impostor")
    impostor = run("catalog", "check", "--catalog", tmp_path / "cat", "--authority", tmp_path / "impostor.pub",
                   "--hub", json.dumps(hub), "--json")  # fmt: skip
    assert impostor.exit_code == 1
    assert json.loads(impostor.output)["code"] == "CATALOG_SIGNATURE_INVALID"


def test_check_rejects_bad_hub_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["catalog", "check", "--catalog", str(tmp_path), "--authority", str(tmp_path / "a.pub"), "--hub",
         '{"manufacturer": "121D", "model": "0000", "hardware_version": "12", "firmware_version": "01000000"}'],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "hardware_version" in result.output
