"""The doors an operator walks through: each bad input gets one line naming the problem and the exit status README
gives (2 bad input, 1 refusal, 130 Ctrl-C, 70 a fault of ours), never a traceback, and nothing stored changes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from firmware_catalog.keys import generate_key, write_keypair
from station.cli import main
from tests.station.conftest import hub_id, store_contents


@pytest.fixture
def config(tmp_path: Path) -> Path:
    write_keypair(generate_key(), tmp_path / "authority")
    path = tmp_path / "station.toml"
    path.write_text(
        '[station]\nid = "st-1"\nregion = "North"\noperator = "op-1"\nfacility_approval = "SSC-1"\n'
        'store = "state/station.db"\n[catalog]\nfolder = "catalog"\nauthority_key = "authority.pub"\n'
    )
    return path


def reflash(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=stdin)
    assert "Traceback" not in result.output
    return result.exit_code, result.stdout, result.stderr


def with_order(config: Path) -> None:
    order = config.parent / "order.csv"
    order.write_text(f"order_ref,requesting_party,csp_region,chf_id\nDCC-1,S,North,{hub_id(1)}\n")
    assert reflash("orders", "import", str(order), "--config", str(config))[0] == 0


def digest(path: Path) -> str:
    return store_contents(path)


@pytest.mark.parametrize(
    "command",
    [
        ["audit", "verify"],
        ["audit", "export"],
        ["orders", "list"],
        ["orders", "report", "DCC-1"],
        ["orders", "receive", "DCC-1", hub_id(1)],
        ["orders", "dispatch", "DCC-1", hub_id(1)],
        ["orders", "close", "DCC-1"],
    ],
)
def test_a_command_that_reads_the_store_refuses_one_that_is_not_there(config: Path, command: list[str]) -> None:
    code, _, err = reflash(*command, "--config", str(config))
    assert code == 2
    assert "no station store at" in err
    assert str(config.parent / "state" / "station.db") in err
    assert not (config.parent / "state" / "station.db").exists()  # nothing was made from a mistyped path


def test_an_order_that_does_not_exist_is_said_once(config: Path) -> None:
    with_order(config)
    store = config.parent / "state" / "station.db"
    before = digest(store)  # the store's contents: a late WAL checkpoint by a collected connection does not count
    for action in ("receive", "dispatch"):
        code, out, err = reflash("orders", action, "NOPE", hub_id(1), hub_id(2), "--config", str(config))
        assert code == 2
        assert err.strip() == "error: no order 'NOPE'"
        assert out == ""
    assert digest(store) == before


def test_a_misread_barcode_is_bad_input_and_a_refused_hub_a_refusal(config: Path) -> None:
    with_order(config)
    code, out, err = reflash("orders", "receive", "DCC-1", "--config", str(config), stdin=f"{hub_id(1)}\nnot-an-id\n")
    assert code == 2
    assert f"{hub_id(1)}: received" in out
    assert "not-an-id: error: not an EUI-64" in err
    code, _, err = reflash("orders", "dispatch", "DCC-1", hub_id(1), "--config", str(config))
    assert code == 1  # a real hub, but not processed: custody refuses it
    assert "has no final outcome" in err
    # Lower case and bare hex are the same ID (DUIS form on the way in).
    code, out, _ = reflash("orders", "receive", "DCC-1", hub_id(1).replace("-", "").lower(), "--config", str(config))
    assert code == 0
    assert "received" in out


@pytest.mark.parametrize("since", ["yesterday", "2026-13-01T00:00:00Z", "2026-11-23T00:00:00"])
def test_audit_export_refuses_a_time_it_cannot_read(config: Path, since: str) -> None:
    with_order(config)
    code, out, err = reflash("audit", "export", "--since", since, "--config", str(config))
    assert code == 2
    assert out == ""
    assert "--since" in err


def test_audit_export_since_an_offset_time_means_that_instant(config: Path) -> None:
    with_order(config)
    code, out, _ = reflash("audit", "export", "--since", "2000-01-01T01:00:00+01:00", "--config", str(config))
    assert code == 0
    assert out.count("\n") == 1  # the order import
    code, out, _ = reflash("audit", "export", "--since", "2999-01-01T00:00:00Z", "--config", str(config))
    assert (code, out) == (0, "")


def test_ctrl_c_while_scanning_exits_130(config: Path) -> None:
    with_order(config)
    # The child takes Ctrl-C as a terminal's foreground process does, whatever this test inherited: a shell without
    # job control starts background commands with SIGINT ignored, which Python then keeps (and the test hung).
    with subprocess.Popen(
        [sys.executable, "-c", "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
         "from station.cli import main; main()", "orders", "receive", "DCC-1", "--config", str(config)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as scanner:  # fmt: skip
        try:
            assert scanner.stdin is not None
            assert scanner.stdout is not None
            assert scanner.stderr is not None
            scanner.stdin.write(f"{hub_id(1)}\n")
            scanner.stdin.flush()
            # Each scan is answered as it comes, before the next one (and before stdin ends).
            assert scanner.stdout.readline().strip() == f"{hub_id(1)}: received"
            scanner.send_signal(signal.SIGINT)
            # stdin stays open, as a terminal's does (an EOF read first would end the command normally, exit 0).
            scanner.wait(timeout=20)
            err = scanner.stderr.read()
        finally:
            scanner.kill()
    assert scanner.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted" in err


def test_a_fault_of_ours_is_one_line_unless_debug(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import station.cli.audit as audit_cli

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(audit_cli, "open_store", broken)
    monkeypatch.delenv("REFLASH_DEBUG", raising=False)
    result = CliRunner().invoke(main, ["audit", "verify", "--config", str(config)])
    assert result.exit_code == 70
    assert result.stderr.strip() == "error: internal error: RuntimeError('boom') (run with --debug for the traceback)"
    debug = CliRunner().invoke(main, ["--debug", "audit", "verify", "--config", str(config)])
    assert debug.exit_code == 70
    assert "Traceback" in debug.stderr
    assert os.environ.get("REFLASH_DEBUG") is None


def test_orders_speak_json_to_scripts_errors_included(config: Path) -> None:
    args = ["--config", str(config)]
    order = config.parent / "order.csv"
    order.write_text(f"order_ref,requesting_party,csp_region,chf_id\nDCC-1,S,North,{hub_id(1)}\n")
    code, out, _ = reflash("orders", "import", str(order), "--json", *args)
    assert code == 0
    assert json.loads(out) == {"order_ref": "DCC-1", "kind": "dcc", "region": "North", "hubs": 1}
    code, out, _ = reflash("orders", "import", str(order), "--json", *args)
    assert code == 2
    refused = json.loads(out)
    assert refused["exit_status"] == 2
    assert refused["problems"] == [
        "order_ref 'DCC-1' was already imported",
        f"line 2: chf_id {hub_id(1)} is already in open order DCC-1",
    ]
    code, out, _ = reflash("orders", "receive", "DCC-1", "--json", *args, stdin=f"{hub_id(1)}\n{hub_id(9)}\njunk\n")
    assert code == 2
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(line["chf_id"], line["result"]) for line in lines] == [
        (hub_id(1), "received"), (hub_id(9), "received_unasked"), (None, "misread"),
    ]  # fmt: skip
    code, out, _ = reflash("orders", "dispatch", "DCC-1", hub_id(1), "--json", *args)
    assert code == 1
    assert json.loads(out)["result"] == "refused"
    code, out, _ = reflash("orders", "dispatch", "NOPE", hub_id(1), "--json", *args)
    assert (code, json.loads(out)["error"]) == (2, "no order 'NOPE'")
    code, out, _ = reflash("orders", "close", "DCC-1", "--json", *args)
    assert code == 0
    closed = json.loads(out)
    assert closed["summary_published"] is None  # no broker configured: nothing to publish to
    assert Path(closed["report_json"]).exists()


def test_keygen_and_sign_image_speak_json(tmp_path: Path) -> None:
    code, out, _ = reflash("catalog", "keygen", "--out", str(tmp_path / "maker"), "--json")
    assert code == 0
    made = json.loads(out)
    assert (Path(made["private_key"]).exists(), len(made["fingerprint"])) == (True, 64)
    code, out, _ = reflash("catalog", "keygen", "--out", str(tmp_path / "maker"), "--json")
    assert (code, json.loads(out)["error"]) == (2, f"{tmp_path / 'maker'}.key exists; refusing to overwrite a key")
    (tmp_path / "mi.bin").write_bytes(b"\x42" * 300)
    sign = ["catalog", "sign-image", "--key", str(tmp_path / "maker.key"), "--manufacturer", "121D",
            "--image-type", "0000", "--version", "01020000", "--min-hw", "1100", "--max-hw", "12FF",
            str(tmp_path / "mi.bin")]  # fmt: skip
    code, out, _ = reflash(*sign, str(tmp_path / "fw.bin"), "--json")
    assert code == 0
    described = json.loads(out)
    assert (described["file_version"], described["total_size"]) == ("01020000", 300 + 60 + 66)
    code, out, err = reflash(*sign, str(tmp_path / "no-such-folder" / "fw.bin"))
    assert code == 2
    assert err.strip() == f"error: {tmp_path / 'no-such-folder' / 'fw.bin'}: No such file or directory"
