"""A hub's identity read from a file, and errors that name the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulators.hub import IdentityFileError, load_identity


def test_identity_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "hub.json"
    path.write_text(
        json.dumps(
            {
                "manufacturer": "1072",
                "model": "0102",
                "hardware_version": "0110",
                "firmware_version": "04000007",
                "chf_id": "00db1234567890a0",
                "han_variant": "Single Band",
            }
        )
    )
    identity = load_identity(path)
    assert identity.chf_id == "00-DB-12-34-56-78-90-A0"
    assert identity.firmware_version == "04000007"


def test_bad_field_is_named(tmp_path: Path) -> None:
    path = tmp_path / "hub.json"
    path.write_text(
        json.dumps({"manufacturer": "10722", "model": "0102", "hardware_version": "1", "firmware_version": "1"})
    )
    with pytest.raises(IdentityFileError, match=r"hub.json: field manufacturer: .*4 hex digits"):
        load_identity(path)


def test_not_json_says_where(tmp_path: Path) -> None:
    path = tmp_path / "hub.json"
    path.write_text('{"manufacturer": \n oops}')
    with pytest.raises(IdentityFileError, match="not JSON: line 2 column 2"):
        load_identity(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(IdentityFileError, match="cannot read identity file"):
        load_identity(tmp_path / "absent.json")
