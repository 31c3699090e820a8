"""Issue 13, the station as a service: Prometheus metrics scraped over HTTP from a real `reflash run` on a simulated
TCP bench, sd_notify over a real unix datagram socket, and the systemd unit and udev rule in config/."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, cast

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from station.config import load_config
from station.demo import device_id
from station.live_state import StationSnapshot, Totals
from station.slot import SlotCounters, SlotSnapshot, SlotState
from tests.station.test_slot_faults import HONEST, HONEST_TARGET, Bench, Events, bench, import_order

if TYPE_CHECKING:
    from firmware_catalog.catalog import Catalog
    from station.bench import Bench as StationBench

__all__ = ["bench"]  # the fixture, shared with test_slot_faults

ROOT = Path(__file__).resolve().parents[2]


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of a scrape: {sample name: {labels: value}}."""
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def with_metrics(config: Path, listen: str) -> None:
    config.write_text(config.read_text() + f'\n[metrics]\nlisten = "{listen}"\n')


def catalog_entry(world_dir: Path) -> tuple[int, float, int]:
    """The catalog's serial and expiry (Unix time) and the size of the honest hub's target image."""
    document = json.loads((world_dir / "catalog/catalog.json").read_text())
    (size,) = [e["size"] for e in document["entries"] if e["manufacturer"] == HONEST["manufacturer"]
               and e["model"] == HONEST["model"] and e["firmware_version"] == HONEST_TARGET]  # fmt: skip
    return document["serial"], datetime.fromisoformat(document["expires_at"]).timestamp(), size


def test_metrics_scraped_from_a_running_station(bench: Bench) -> None:
    bench.hub("H", 1, HONEST)
    bench.hub("E", 2, HONEST, chf_id=device_id(9, 1))  # in no order: ends UNEXPECTED
    config = bench.config()
    with_metrics(config, "127.0.0.1:0")
    import_order(config, [device_id(1, 1)])
    process = bench.station(config)
    events = Events(process)
    url = events.wait_for("station_started")["metrics"]
    assert isinstance(url, str)
    assert url.startswith("http://127.0.0.1:")
    events.wait_for("job_finished", slot="H", outcome="REFLASHED")
    events.wait_for("job_finished", slot="E", outcome="UNEXPECTED")
    samples = scrape(url)
    serial, expires, size = catalog_entry(bench.world.workdir)
    assert samples["reflash_hubs_total"] == {(("outcome", "REFLASHED"),): 1.0, (("outcome", "UNEXPECTED"),): 1.0}
    assert samples["reflash_transferred_bytes_total"] == {(): float(size)}
    assert samples["reflash_catalog_serial"] == {(): float(serial)}
    assert samples["reflash_catalog_expiry_timestamp_seconds"] == {(): expires}
    assert samples["reflash_link_errors_total"] == {(("slot", "E"),): 0.0, (("slot", "H"),): 0.0}
    assert set(samples["reflash_slot_transfer_rate_bytes_per_second"]) == {(("slot", "E"),), (("slot", "H"),)}
    assert samples["reflash_slots"][(("state", "done"),)] == 2.0
    assert sum(samples["reflash_slots"].values()) == 2.0
    assert samples["process_start_time_seconds"][()] < time.time()  # the process metrics, in the station's registry
    assert any(name.startswith("python_gc_") for name in samples)
    assert httpx.get(url.replace("/metrics", "/"), timeout=5).status_code == 404
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 1  # drained by a signal
    with pytest.raises(httpx.ConnectError):  # stopped with the station
        httpx.get(url, timeout=2)


def test_metrics_on_a_non_loopback_address_refuse_the_start(bench: Bench) -> None:
    bench.hub("H", 1, HONEST)
    config = bench.config()
    with_metrics(config, "0.0.0.0:9464")
    store = load_config(config).resolve(Path("state/station.db"))
    process = bench.station(config)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "[metrics] listen" in lines[0]
    assert "not a loopback address" in lines[0]
    assert not store.exists()  # nothing recorded


def test_metrics_listen_must_be_host_and_port(tmp_path: Path, bench: Bench) -> None:
    config = bench.config()
    with_metrics(config, "9464")
    with pytest.raises(Exception, match=r"metrics\.listen.*host:port"):
        load_config(config)


# -- sd_notify --------------------------------------------------------------------------------------------------------


class NotifySocket:
    """A unix datagram socket in the abstract namespace, standing in for systemd's."""

    def __init__(self) -> None:
        self.name = f"@reflash-test-{os.getpid()}-{time.monotonic_ns()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + self.name[1:].encode())
        self.messages: list[dict[str, str]] = []

    def wait_for(self, key: str, within: float = 30.0, count: int = 1, says: str = "") -> list[dict[str, str]]:
        """The messages with `key` (whose value contains `says`), once there are `count` of them."""
        deadline = time.monotonic() + within
        while len(self._with(key, says)) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{count} x {key} not received: {self.messages}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))
        return self._with(key, says)

    def _with(self, key: str, says: str) -> list[dict[str, str]]:
        return [m for m in self.messages if key in m and says in m[key]]

    def close(self) -> None:
        self.sock.close()


def test_sd_notify_ready_watchdog_and_stopping(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    bench.hub("H", 1, HONEST)
    config = bench.config()
    import_order(config, [device_id(1, 1)])
    notify = NotifySocket()
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", notify.name)
        monkeypatch.setenv("WATCHDOG_USEC", "200000")  # a ping every 0.1 s
        process = bench.station(config)
        events = Events(process)
        (ready,) = notify.wait_for("READY")
        assert ready["READY"] == "1"
        assert ready["STATUS"].startswith("slots: 1 empty; hubs: 0 (no outcomes)")
        events.wait_for("station_started", within=1)  # READY=1 came after the start was recorded
        first = time.monotonic()
        pings = notify.wait_for("WATCHDOG", count=5, within=10)
        assert all(p["WATCHDOG"] == "1" for p in pings)
        assert time.monotonic() - first < 5  # every 0.1 s, not every 5 s
        events.wait_for("job_finished", slot="H", outcome="REFLASHED")
        notify.wait_for("STATUS", says="hubs: 1 (REFLASHED 1)", within=10)
        process.send_signal(signal.SIGTERM)
        (stopping,) = notify.wait_for("STOPPING", within=5)
        assert stopping["STOPPING"] == "1"
        assert process.wait(10) == 1
    finally:
        notify.close()


def test_a_notifier_sends_to_a_socket_path_and_survives_a_missing_one(tmp_path: Path) -> None:
    from station.service_notify import ServiceNotifier

    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        notifier = ServiceNotifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"})
        assert notifier.watchdog_interval_s is None  # the watchdog is for another process
        notifier.ready("one\nline")
        assert server.recv(4096) == b"READY=1\nSTATUS=one line"
        notifier.status("one line")  # unchanged: not sent again
        notifier.status("two")
        assert server.recv(4096) == b"STATUS=two"
    assert ServiceNotifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "30000000"}).watchdog_interval_s == 15.0
    ServiceNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).watchdog()  # logged, never raised
    assert not ServiceNotifier({}).enabled


# -- the unit and the rule ----------------------------------------------------------------------------------------


def unit_options(path: Path) -> dict[str, list[str]]:
    """A systemd unit file as {Section.Key: [values]} (keys may repeat)."""
    options: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        options.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return options


def test_the_unit_file_says_what_matters() -> None:
    unit = unit_options(ROOT / "config/reflash.service")
    one = {key: values[-1] for key, values in unit.items()}
    assert one["Service.Type"] == "notify"
    assert one["Service.NotifyAccess"] == "main"
    assert re.fullmatch(r"[1-9][0-9]*s", one["Service.WatchdogSec"])
    assert one["Service.Restart"] == "on-failure"
    assert (one["Service.User"], one["Service.Group"]) == ("reflash", "reflash")
    assert one["Service.StateDirectory"] == "reflash"
    assert one["Service.ConfigurationDirectory"] == "reflash"
    assert set(one["Service.SupplementaryGroups"].split()) == {"dialout", "plugdev"}
    assert one["Service.NoNewPrivileges"] == "yes"
    assert one["Service.ProtectSystem"] == "strict"
    assert "/var/lib/reflash" in one["Service.ReadWritePaths"].split()
    assert one["Service.ProtectHome"] == "yes"
    assert one["Service.PrivateTmp"] == "yes"
    assert one["Service.DevicePolicy"] == "closed"
    allowed = {value.split()[0] for value in unit["Service.DeviceAllow"]}
    assert {"char-ttyUSB", "char-ttyACM", "char-usb_device"} <= allowed
    start = one["Service.ExecStart"].split()
    assert start[1:] == ["run", "--config", "/etc/reflash/station.toml", "--log-format", "json", "--no-live"]
    assert one["Service.KillSignal"] == "SIGTERM"
    assert one["Service.ExecReload"] == "/bin/kill -HUP $MAINPID"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    unit = tmp_path / "reflash.service"
    # verify checks that ExecStart's program exists: point it at one that does, as an install would.
    unit.write_text((ROOT / "config/reflash.service").read_text().replace("/opt/reflash/venv/bin/reflash", "/bin/true"))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    problems = [line for line in (result.stdout + result.stderr).splitlines() if "reflash.service" in line]
    if result.returncode != 0 and not problems:
        pytest.skip(f"systemd-analyze cannot run here: {result.stderr.strip()[:200]}")
    assert not problems, result.stdout + result.stderr
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_udev_rule_names_jigs_by_serial_number() -> None:
    rules = [line for line in (ROOT / "config/99-reflash-jigs.rules").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]  # fmt: skip
    assert rules
    for rule in rules:
        assert re.search(r'ATTRS\{serial\}=="[^"]+"', rule), rule
        assert re.search(r'SYMLINK\+="reflash/jig-[A-Za-z0-9]+"', rule), rule
        assert 'GROUP="reflash"' in rule, rule
        assert 'MODE="0660"' in rule, rule


# -- docs/operations.md ---------------------------------------------------------------------------------------------


class _StubBench:
    """What StationCollector reads of a bench: a snapshot with every part present, and the slots' counters."""

    def snapshot(self) -> StationSnapshot:
        outbox = {"pending": 1, "at_broker": 0, "confirmed": 2, "rejected": 0,
                  "oldest_unconfirmed_at": "2026-01-01T00:00:00.000Z"}  # fmt: skip
        return StationSnapshot(
            station="st", stopped=False, updated_at=time.time(),
            slots=[SlotSnapshot(name="A1", state=SlotState.TRANSFERRING, bytes_per_s=1000.0)],
            totals=Totals(hubs=1, outcomes={"REFLASHED": 1}, hubs_per_hour=60, bytes_per_s=1000.0, uptime_s=60),
            reporting={"broker": {"connected": True}, "refused_acks": 0, "refused_publishes": 0, "outbox": outbox},
        )  # fmt: skip

    def counters(self) -> dict[str, SlotCounters]:
        return {"A1": SlotCounters(bytes_acked=10, link_errors=1)}


class _StubCatalog:
    serial = 7
    document = type("Document", (), {"expires_at": datetime(2030, 1, 1, tzinfo=UTC)})()


def stub_registry() -> CollectorRegistry:
    from station.metrics import station_registry

    return station_registry(cast("StationBench", _StubBench()), lambda: cast("Catalog", _StubCatalog()))


async def test_the_asgi_app_serves_the_registry() -> None:
    from station.metrics import metrics_app

    transport = httpx.ASGITransport(app=metrics_app(stub_registry()))
    async with httpx.AsyncClient(transport=transport, base_url="http://station") as client:
        response = await client.get("/")  # mounted at /metrics, it sees the path below the mount
    assert response.status_code == 200
    samples = {s.name: s.value for f in text_string_to_metric_families(response.text) for s in f.samples}
    assert samples["reflash_catalog_serial"] == 7
    assert samples["reflash_transferred_bytes_total"] == 10
    assert samples["reflash_outbox_oldest_unconfirmed_age_seconds"] > 0


def test_the_metrics_in_the_docs_are_the_registry() -> None:
    registry = stub_registry()
    exposed = {
        sample.name
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }
    table = (ROOT / "docs/operations.md").read_text().split("| metric | type | labels | what |")[1].split("\n\n")[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE))
    assert documented == {name for name in exposed if name.startswith("reflash_")}
    assert {name.split("_")[0] for name in exposed} == {"reflash", "process", "python"}
    assert len(list(registry.collect())) > len(documented)  # the process's own metrics too
