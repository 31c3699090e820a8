"""The simulator and jig commands as people use them: a hub on a real pty, a bench on TCP, the station over it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from station.cli import main
from station.demo import DemoWorld, build_demo_world
from tests.station.conftest import serve_pty_hub


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> DemoWorld:
    return build_demo_world(tmp_path_factory.mktemp("cli") / "world")


def catalog_args(world: DemoWorld) -> list[str]:
    return ["--catalog", str(world.catalog_dir), "--authority", str(world.authority_pub)]


def jig_flash(url: str, world: DemoWorld) -> Result:
    return CliRunner().invoke(main, ["jig", "flash", url, *catalog_args(world), "--json"])


def reflash(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "from station.cli import main; main()", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def pty_hub(world: DemoWorld, tmp_path: Path) -> Iterator[str]:
    with serve_pty_hub(world.key("maker-121D.pub"), tmp_path / "hub") as path:
        yield path


def test_identify_and_flash_over_a_real_pty(pty_hub: str, world: DemoWorld) -> None:
    runner = CliRunner()
    identity = json.loads(runner.invoke(main, ["jig", "identify", pty_hub, "--json"]).output)
    assert set(identity) >= {
        "chf_id", "gpf_id", "manufacturer", "model", "hardware_version", "firmware_version", "han_variant",
        "chts_version", "serial",
    }  # fmt: skip
    assert identity["firmware_version"] == "01000000"
    result = jig_flash(pty_hub, world)
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.output)
    assert (outcome["outcome"], outcome["firmware_after"]) == ("REFLASHED", "01020000")
    again = json.loads(runner.invoke(main, ["jig", "identify", pty_hub, "--json"]).output)
    assert again["firmware_version"] == "01020000"
    # The same policy as the station: nothing left to do now.
    second = jig_flash(pty_hub, world)
    assert json.loads(second.output)["outcome"] == "ALREADY_CURRENT"


@pytest.mark.parametrize(
    ("fault", "outcome", "reason"),
    [
        ("echo-hash", "QUARANTINED", "RUNNING_IMAGE_UNPROVEN"),  # it stores, then lies about what it runs
        ("refuse-image", "FAILED", "TRANSFER_REFUSED_BY_HUB"),
        ("activation-fail", "QUARANTINED", "ACTIVATION_FAILURE"),
    ],
)
def test_jig_flash_gives_the_station_s_outcome_and_reason_code(
    world: DemoWorld, tmp_path: Path, fault: str, outcome: str, reason: str
) -> None:
    # One flash sequence (station/flash.py): the command ends a hostile hub as `reflash run` does
    # (tests/station/test_hostile_hubs.py, test_bench_e2e.py), with the same outcome and reason code.
    with serve_pty_hub(world.key("maker-121D.pub"), tmp_path / "hub", fault) as path:
        result = jig_flash(path, world)
    assert result.exit_code == 1, result.output
    ended = json.loads(result.output)
    assert (ended["outcome"], ended["reason"]) == (outcome, reason)
    assert ended["firmware_after"] is None


def test_jig_flash_refuses_what_the_policy_refuses(tmp_path: Path, world: DemoWorld) -> None:
    process = reflash("sim", "hub", "--pty", "--hardware", "1300", "--state", str(tmp_path / "hub"))
    assert process.stdout is not None
    path = process.stdout.readline().decode().strip()
    try:
        result = jig_flash(path, world)
        assert result.exit_code == 1
        assert json.loads(result.output)["reason"] == "HARDWARE_OUT_OF_RANGE"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
        process.stdout.close()
        if process.stderr:
            process.stderr.close()


def test_sim_bench_over_tcp_then_the_station_runs_it(tmp_path: Path, world: DemoWorld) -> None:
    config = tmp_path / "bench.toml"
    process = reflash(
        "sim", "bench", "--slots", "3", "--write-config", str(config), "--trust",
        f"121D={world.key('maker-121D.pub')}", "--state", str(tmp_path / "hubs"), "--catalog",
        str(world.catalog_dir), "--authority", str(world.authority_pub), "--json",
    )  # fmt: skip
    try:
        assert process.stdout is not None
        announced = json.loads(process.stdout.readline())  # printed once the config is written and ports listen
        text = config.read_text()
        assert text.count('driver = "tcp"') == 3
        assert [hub["url"] in text for hub in announced["hubs"]] == [True] * 3
        order = tmp_path / "order.csv"
        ids = [hub["chf_id"] for hub in announced["hubs"]]
        assert len(set(ids)) == 3
        order.write_text("order_ref,requesting_party,csp_region,chf_id\n" + "".join(f"B-1,S,North,{i}\n" for i in ids))
        runner = CliRunner()
        assert runner.invoke(main, ["orders", "import", str(order), "--config", str(config)]).exit_code == 0
        assert runner.invoke(main, ["orders", "receive", "B-1", *ids, "--config", str(config)]).exit_code == 0
        result = runner.invoke(main, ["run", "--config", str(config), "--once", "--log-format", "json", "--no-live"])
        assert result.exit_code == 0, result.output
        finished = [json.loads(line) for line in result.output.splitlines() if '"job_finished"' in line]
        assert sorted(f["outcome"] for f in finished) == ["REFLASHED"] * 3
        status = json.loads(runner.invoke(main, ["status", "--config", str(config), "--json"]).output)
        assert status["totals"]["hubs"] == 3
        table = runner.invoke(main, ["status", "--config", str(config)]).output
        assert "S001" in table
        assert "REFLASHED" in table
        report = json.loads(runner.invoke(main, ["orders", "report", "B-1", "--json", "--config", str(config)]).output)
        assert report["totals"]["processed"] == 3
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
        for stream in (process.stdout, process.stderr):
            if stream:
                stream.close()


def test_sim_bench_keeps_its_ids_and_ports_and_never_overwrites_a_config(tmp_path: Path) -> None:
    config = tmp_path / "bench.toml"

    def start(*extra: str) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
        process = reflash("sim", "bench", "--slots", "2", "--write-config", str(config), "--state",
                          str(tmp_path / "hubs"), "--json", *extra)  # fmt: skip
        assert process.stdout is not None
        line = process.stdout.readline()
        return process, json.loads(line) if line else {}

    def stop(process: subprocess.Popen[bytes]) -> int:
        process.send_signal(signal.SIGTERM)
        code = process.wait(10)
        for stream in (process.stdout, process.stderr):
            if stream:
                stream.close()
        return code

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
    first, announced = start("--port-base", str(base))
    stop(first)
    assert [hub["url"] for hub in announced["hubs"]] == [f"tcp://127.0.0.1:{base}", f"tcp://127.0.0.1:{base + 1}"]
    refused = reflash("sim", "bench", "--slots", "2", "--write-config", str(config), "--state", str(tmp_path / "hubs"))
    _, err = refused.communicate(timeout=20)
    assert refused.returncode == 2
    assert b"exists; give --force to replace it" in err
    again, same = start("--force", "--port-base", str(base))
    stop(again)
    assert same == announced  # same state folder: the same bench number, device IDs and ports
    other, elsewhere = start("--force", "--state", str(tmp_path / "other-bench"))
    stop(other)
    assert {h["chf_id"] for h in elsewhere["hubs"]}.isdisjoint({h["chf_id"] for h in announced["hubs"]})
