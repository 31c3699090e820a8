"""`reflash catalog sign-image`, `verify` and `check` with a manufacturer key that signs the Manufacturer Image alone
(issue 15): the scope comes from `--scope` where there is no catalog, and from the catalog where there is one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from station.cli import main
from tests.station.test_cli_catalog import catalog_source


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def signed(tmp_path: Path) -> Path:
    """An image whose signature covers the Manufacturer Image alone."""
    assert run("catalog", "keygen", "--out", tmp_path / "maker").exit_code == 0
    (tmp_path / "body.bin").write_bytes(os.urandom(3000))
    result = run(
        "catalog", "sign-image", "--key", tmp_path / "maker.key", "--manufacturer", "121D", "--image-type", "0000",
        "--version", "ACDCACDC", "--min-hw", "1111", "--max-hw", "1211", "--scope", "manufacturer-image",
        tmp_path / "body.bin", tmp_path / "image.bin",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return tmp_path / "image.bin"


def test_verify_with_a_key_reads_the_scope_option(signed: Path, tmp_path: Path) -> None:
    over_mi = run(
        "catalog", "verify", signed, "--key", tmp_path / "maker.pub", "--scope", "manufacturer-image", "--json"
    )
    assert over_mi.exit_code == 0, over_mi.output
    assert json.loads(over_mi.output)["reason"] == "OK"
    default = run("catalog", "verify", signed, "--key", tmp_path / "maker.pub", "--json")
    assert default.exit_code == 1
    refused = json.loads(default.output)
    assert refused["reason"] == "SIGNATURE_INVALID"
    assert "over scope header-image-control" in refused["message"]
    assert "give --scope manufacturer-image" in refused["message"]


def test_sign_image_refuses_an_unknown_scope(tmp_path: Path) -> None:
    run("catalog", "keygen", "--out", tmp_path / "maker")
    (tmp_path / "body.bin").write_bytes(b"x" * 10)
    result = run(
        "catalog", "sign-image", "--key", tmp_path / "maker.key", "--manufacturer", "121D", "--image-type", "0000",
        "--version", "ACDCACDC", "--min-hw", "1111", "--max-hw", "1211", "--scope", "whole-file",
        tmp_path / "body.bin", tmp_path / "image.bin",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--scope" in result.output
    assert "manufacturer-image" in result.output
    assert not (tmp_path / "image.bin").exists()


def _source(tmp_path: Path, serial: int, scope_line: str) -> Path:
    path = tmp_path / f"source-{serial}.toml"
    path.write_text(catalog_source((tmp_path / "body.bin").read_bytes(), serial=serial, key_lines=scope_line))
    return path


def test_verify_and_check_with_a_catalog_read_the_key_scope(signed: Path, tmp_path: Path) -> None:
    run("catalog", "keygen", "--out", tmp_path / "authority")
    state = ("--state-dir", tmp_path / "state")
    authority = ("--authority", tmp_path / "authority.pub")
    source = _source(tmp_path, 1, 'scope = "manufacturer-image"')
    built = run("catalog", "build", source, "--key", tmp_path / "authority.key", "--out", tmp_path / "cat", "--json")
    assert built.exit_code == 0, built.output
    assert json.loads(built.output)["warnings"] == []
    verified = run("catalog", "verify", signed, "--catalog", tmp_path / "cat", *authority, *state, "--json")
    assert verified.exit_code == 0, verified.output
    hub = {"manufacturer": "121D", "model": "0000", "hardware_version": "1200", "firmware_version": "01000000"}
    check = run(
        "catalog", "check", "--catalog", tmp_path / "cat", *authority, *state, "--hub", json.dumps(hub), "--json"
    )
    assert (check.exit_code, json.loads(check.output)["code"]) == (0, "OK"), check.output

    # The same key without a scope means the default: the build warns, verify and check refuse.
    source = _source(tmp_path, 2, "")
    built = run("catalog", "build", source, "--key", tmp_path / "authority.key", "--out", tmp_path / "cat2", "--json")
    assert built.exit_code == 0, built.output
    (warning,) = json.loads(built.output)["warnings"]
    assert "signs it over scope manufacturer-image, but the source gives header-image-control" in warning
    refused = run("catalog", "verify", signed, "--catalog", tmp_path / "cat2", *authority, *state, "--json")
    assert refused.exit_code == 1
    result = json.loads(refused.output)
    assert result["reason"] == "UNTRUSTED_KEY"
    assert "signs it over scope manufacturer-image; the catalog states header-image-control" in result["message"]
    check = run(
        "catalog", "check", "--catalog", tmp_path / "cat2", *authority, *state, "--hub", json.dumps(hub), "--json"
    )
    assert (check.exit_code, json.loads(check.output)["code"]) == (1, "UNTRUSTED_KEY"), check.output


def test_an_unknown_scope_in_the_source_is_bad_input(signed: Path, tmp_path: Path) -> None:
    run("catalog", "keygen", "--out", tmp_path / "authority")
    source = _source(tmp_path, 1, 'scope = "whole-file"')
    built = run("catalog", "build", source, "--key", tmp_path / "authority.key", "--out", tmp_path / "cat")
    assert built.exit_code == 2
    assert f"{source}: line 7: keys[0].scope: Input should be 'header-image-control' or 'manufacturer-image'" in (
        built.output
    )
    assert not (tmp_path / "cat").exists()
