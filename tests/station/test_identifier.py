"""One grammar for the names that become topic levels, file names and record fields, checked at every door."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from station.config import ConfigError, load_config
from station.identifier import check_label, check_name, check_order_ref, topic_level
from station.messages import topic
from station.orders import OrderImportError, read_order_file
from tests.station.conftest import hub_id


@given(st.text())
def test_a_topic_level_never_splits_or_matches_and_decodes_back(value: str) -> None:
    level = topic_level(value)
    assert not set(level) & {"/", "#", "+", "\0"}
    assert level.isascii()
    assert unquote(level, errors="strict") == value


def test_order_summary_topic_encodes_what_would_break_it() -> None:
    assert topic("order", region="North", station="st-1", order_ref="DCC/7 #+") == (
        "reflash/v1/North/st-1/order/DCC%2F7%20%23%2B"
    )
    assert (
        topic("order", region="North", station="st-1", order_ref="DCC-0001") == "reflash/v1/North/st-1/order/DCC-0001"
    )


@pytest.mark.parametrize("name", ["st-north-01", "A1", "S001", "st_1.b"])
def test_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "st+1", "A/1 #", " A1", "-a", "x" * 65, "é", "a\nb"])
def test_not_names(name: str) -> None:
    with pytest.raises(ValueError, match="is not a name"):
        check_name(name)


@pytest.mark.parametrize("label", ["", " op", "op ", "op\x1b[31m", "a\nb", "x" * 129])
def test_not_labels(label: str) -> None:
    with pytest.raises(ValueError, match="is not a label"):
        check_label(label)


@pytest.mark.parametrize("ref", ["", " DCC", "DCC\t1", "DCC\x00", "Ω-1", "x" * 65])
def test_not_order_refs(ref: str) -> None:
    with pytest.raises(ValueError, match="is not an order reference"):
        check_order_ref(ref)


def write_config(tmp_path: Path, station_id: str = "st-1", slot: str = "A1", operator: str = "op-1") -> Path:
    path = tmp_path / "station.toml"
    path.write_text(
        f'[station]\nid = "{station_id}"\nregion = "North"\noperator = "{operator}"\nfacility_approval = "SSC-1"\n'
        '[catalog]\nfolder = "c"\nauthority_key = "a.pub"\n'
        f'[[slots]]\nname = "{slot}"\ndriver = "tcp"\nurl = "tcp://127.0.0.1:1"\n'
    )
    return path


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("station_id", "st+1", "station.id"),
        ("slot", "A/1 #", "slots[0].name"),
        ("operator", "op\\u001b", "station.operator"),
    ],
)
def test_config_refuses_a_bad_name_naming_the_field(tmp_path: Path, field: str, value: str, where: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(write_config(tmp_path, **{field: value}))
    assert f"station.toml: {where}: " in str(refused.value)
    assert "is not a" in str(refused.value)


def test_config_reads_a_bom_and_names_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_config(path).station.id == "st-1"
    path.write_bytes(b'[station]\nid = "st\xff"\n')
    with pytest.raises(ConfigError, match=r"station\.toml: line 2, byte 18: not UTF-8 text"):
        load_config(path)


def test_order_import_refuses_a_reference_it_cannot_keep_as_written(tmp_path: Path) -> None:
    path = tmp_path / "order.csv"
    path.write_text(f"order_ref,requesting_party,csp_region,chf_id\nDCC\x07,S,North,{hub_id(1)}\n")
    with pytest.raises(OrderImportError, match="order_ref: 'DCC\\\\x07' is not an order reference"):
        read_order_file(path)
    path.write_text(f"order_ref,requesting_party,csp_region,chf_id\nDCC/2026#7,S,North,{hub_id(1)}\n")
    assert read_order_file(path).ref == "DCC/2026#7"  # kept as the DCC wrote it; encoded where it is a topic level


@pytest.mark.parametrize("party", ["5", "[1, 2]", '{"a": 1}', "true"])
def test_a_json_order_whose_party_is_not_text_is_refused_by_line(tmp_path: Path, party: str) -> None:
    path = tmp_path / "order.json"
    path.write_text(
        f'{{"order_ref": "DCC-1", "kind": "dcc", "requesting_party": {party}, "csp_region": "North", '
        f'"chf_ids": ["{hub_id(1)}"]}}'
    )
    with pytest.raises(OrderImportError, match=r"requesting_party: .* is not a label"):
        read_order_file(path)
