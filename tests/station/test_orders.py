"""Order requests: strict, all-or-nothing imports with every problem by line; custody; the reconciliation report."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_catalog.keys import generate_key, write_keypair
from station.cli import main
from station.orders import OrderImportError, read_order_file
from station.outcome import Outcome
from station.reconciliation import order_report, report_csv
from station.store import OrderConflict, Store, StoreError
from tests.station.conftest import RunJob, hub_id

HEADER = "order_ref,requesting_party,csp_region,chf_id\n"


def write_csv(tmp_path: Path, rows: list[str], name: str = "order.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + "".join(row + "\n" for row in rows))
    return path


def test_csv_request_reads_ids_in_duis_form(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path, [f"DCC-1,SUPPLIER-A,North,{hub_id(1).lower()}", "DCC-1,SUPPLIER-A,North,00db123400000002"]
    )
    request = read_order_file(path)
    assert (request.ref, request.kind, request.requesting_party, request.region) == (
        "DCC-1",
        "dcc",
        "SUPPLIER-A",
        "North",
    )
    assert request.hubs == [(hub_id(1), 2), (hub_id(2), 3)]


def test_csv_request_lists_every_problem_by_line(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        [
            f"DCC-1,SUPPLIER-A,North,{hub_id(1)}",
            "DCC-1,SUPPLIER-A,North,00-DB-12-34",
            f"DCC-1,SUPPLIER-A,North,{hub_id(1)}",
            f"DCC-2,SUPPLIER-A,North,{hub_id(3)}",
            f"DCC-1,SUPPLIER-A,North,{hub_id(4)},extra",
        ],
    )
    with pytest.raises(OrderImportError) as caught:
        read_order_file(path)
    problems = caught.value.problems
    assert problems[0].startswith("line 3: chf_id: not an EUI-64")
    assert problems[1] == f"line 4: chf_id {hub_id(1)} is listed twice (first on line 2)"
    assert problems[2] == "line 5: order_ref 'DCC-2' differs from line 2's 'DCC-1'"
    assert problems[3] == "line 6: 5 fields, the header has 4"
    assert len(problems) == 4


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "line 1: the file is empty"),
        ("order_ref,chf_id\n", "line 1: missing column 'requesting_party'"),
        (HEADER, "line 2: no hubs listed"),
        (HEADER + f"DCC-1,,North,{hub_id(1)}\n", "line 2: a DCC order needs the requesting_party"),
        (HEADER + f"DCC-1,S,West,{hub_id(1)}\n", "line 2: csp_region must be one of North, Central, South"),
    ],
)
def test_csv_request_refusals(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "o.csv"
    path.write_text(text)
    with pytest.raises(OrderImportError) as caught:
        read_order_file(path)
    assert caught.value.problems[0].startswith(problem)


def test_json_request_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "o.json"
    path.write_text(
        json.dumps(
            {"order_ref": "DCC-9", "requesting_party": "S", "csp_region": "South",
             "chf_ids": [hub_id(1), "zz", hub_id(1)]},
            indent=2,
        )
    )  # fmt: skip
    with pytest.raises(OrderImportError) as caught:
        read_order_file(path)
    lines = path.read_text().splitlines()
    bad_line = next(i for i, text in enumerate(lines, 1) if '"zz"' in text)
    assert caught.value.problems[0].startswith(f"line {bad_line}: chf_id: not an EUI-64")
    assert caught.value.problems[1].startswith(f"line {bad_line + 1}: chf_id {hub_id(1)} is listed twice")


def test_stock_order_has_no_requesting_party(tmp_path: Path) -> None:
    path = tmp_path / "stock.json"
    path.write_text(
        json.dumps({"order_ref": "STOCK-1", "kind": "stock", "csp_region": "Central", "chf_ids": [hub_id(1)]})
    )
    assert read_order_file(path).kind == "stock"
    path.write_text(
        json.dumps({"order_ref": "STOCK-1", "kind": "stock", "requesting_party": "X", "csp_region": "Central",
                    "chf_ids": [hub_id(1)]})
    )  # fmt: skip
    with pytest.raises(OrderImportError, match="a stock order has no requesting_party"):
        read_order_file(path)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300), st.sampled_from([".csv", ".json"]))
def test_random_bytes_give_only_import_errors(tmp_path: Path, data: bytes, suffix: str) -> None:
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        read_order_file(path)
    except OrderImportError as exc:
        assert exc.problems  # noqa: PT017 -- hypothesis: the error is optional here


def test_import_is_all_or_nothing_against_the_store(tmp_path: Path, store: Store) -> None:
    store.import_order(read_order_file(write_csv(tmp_path, [f"DCC-1,S,North,{hub_id(1)}"], "a.csv")))
    second = write_csv(tmp_path, [f"DCC-2,S,North,{hub_id(2)}", f"DCC-2,S,North,{hub_id(1)}"], "b.csv")
    with pytest.raises(OrderConflict) as caught:
        store.import_order(read_order_file(second))
    assert caught.value.problems == [f"line 3: chf_id {hub_id(1)} is already in open order DCC-1"]
    assert [order.ref for order in store.order_book.orders()] == ["DCC-1"]
    assert [store.order_book.hubs(order.ref) for order in store.order_book.orders()] == [[hub_id(1)]]
    again = write_csv(tmp_path, [f"DCC-1,S,North,{hub_id(5)}"], "c.csv")
    with pytest.raises(OrderConflict, match="already imported"):
        store.import_order(read_order_file(again))


def test_custody_and_reconciliation(tmp_path: Path, store: Store, run_job: RunJob) -> None:
    rows = [f"DCC-7,SUPPLIER-B,South,{hub_id(n)}" for n in range(1, 5)]
    store.import_order(read_order_file(write_csv(tmp_path, rows)))
    assert store.receive("DCC-7", hub_id(1))
    assert store.receive("DCC-7", hub_id(2))
    assert store.receive("DCC-7", hub_id(3))
    assert not store.receive("DCC-7", hub_id(99))  # arrived unasked
    run_job(hub_id(1), "DCC-7", Outcome.REFLASHED, charge=980)
    run_job(hub_id(2), "DCC-7", Outcome.REFUSED, after=None, charge=0)
    with pytest.raises(StoreError, match="not processed"):
        store.dispatch("DCC-7", hub_id(3))
    assert store.dispatch("DCC-7", hub_id(1)) == "REFLASHED"
    with pytest.raises(StoreError, match="already dispatched"):
        store.dispatch("DCC-7", hub_id(1))
    assert store.dispatch("DCC-7", hub_id(99)) == "UNASKED"

    report = order_report(store, "DCC-7")
    by_id = {hub["chf_id"]: hub for hub in report["hubs"]}
    assert by_id[hub_id(1)]["outcome"] == "REFLASHED"
    assert by_id[hub_id(1)]["charge"] == "9.80"
    assert by_id[hub_id(1)]["dispatched_at"] is not None
    assert by_id[hub_id(2)]["outcome"] == "REFUSED"
    assert by_id[hub_id(3)]["status"] == "received"
    assert report["never_received"] == [hub_id(4)]
    assert [hub["chf_id"] for hub in report["unasked"]] == [hub_id(99)]
    assert report["totals"]["charge"] == "9.80"
    assert report["totals"]["outcomes"] == {"REFLASHED": 1, "REFUSED": 1}
    parsed = list(csv.DictReader(io.StringIO(report_csv(report))))
    assert len(parsed) == 5
    assert parsed[-1]["asked"] == "no"


def test_orders_cli_end_to_end(tmp_path: Path, run_job: RunJob) -> None:
    write_keypair(generate_key(), tmp_path / "authority")
    config = tmp_path / "station.toml"
    config.write_text(
        '[station]\nid = "st-1"\nregion = "North"\noperator = "op-1"\nfacility_approval = "SSC-1"\n'
        'store = "state/station.db"\n[catalog]\nfolder = "catalog"\nauthority_key = "authority.pub"\n'
    )
    runner = CliRunner()
    args = ["--config", str(config)]
    order = write_csv(tmp_path, [f"DCC-3,S,North,{hub_id(1)}", f"DCC-3,S,North,{hub_id(2)}"])
    result = runner.invoke(main, ["orders", "import", str(order), *args])
    assert result.exit_code == 0, result.output
    bad = write_csv(tmp_path, ["DCC-4,S,North,nonsense"], "bad.csv")
    result = runner.invoke(main, ["orders", "import", str(bad), *args])
    assert result.exit_code == 2
    assert "line 2: chf_id: not an EUI-64" in result.output
    # The barcode scanner types one ID per line.
    result = runner.invoke(main, ["orders", "receive", "DCC-3", *args], input=f"{hub_id(1)}\n{hub_id(7)}\n")
    assert result.exit_code == 0, result.output
    assert "UNASKED" in result.output
    result = runner.invoke(main, ["orders", "dispatch", "DCC-3", hub_id(2), *args])
    assert result.exit_code == 1
    listing = json.loads(runner.invoke(main, ["orders", "list", "--json", *args]).output)
    assert listing["orders"][0]["hubs"] == 2
    report = json.loads(runner.invoke(main, ["orders", "report", "DCC-3", "--json", *args]).output)
    assert report["never_received"] == [hub_id(2)]
    result = runner.invoke(main, ["orders", "close", "DCC-3", *args])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "reports/DCC-3.json").read_text())["state"] == "closed"
    assert (tmp_path / "reports/DCC-3.csv").read_text().startswith("order_ref,asked,chf_id")
    assert runner.invoke(main, ["orders", "close", "DCC-3", *args]).exit_code == 2
    verify = runner.invoke(main, ["audit", "verify", *args])
    assert verify.exit_code == 0, verify.output
    kinds = [json.loads(line)["kind"] for line in runner.invoke(main, ["audit", "export", *args]).output.splitlines()]
    assert kinds[0] == "order_imported"
    assert kinds[-1] == "order_closed"
