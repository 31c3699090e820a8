"""`reflash demo`: the whole station working, on one machine, with nothing to configure.

It builds the demo world (keys, images, a signed catalog), starts a private Mosquitto on a free port and the DSP
update bridge, writes a station configuration for a simulated bench, imports an order and scans its hubs in, runs
the station once over the bench (live table on a terminal), waits until the DSP has acknowledged every result,
and compares each hub's outcome and the SMI's firmware with what the scenario expects. Everything it started is
stopped before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulators.dsp_bridge import DspBridge, SmiStore
from station.config import JobSettings, load_config
from station.daemon import run_station
from station.demo import CONFIG_DIR, DemoHub, DemoWorld, build_demo_world, device_id
from station.mosquitto import Mosquitto
from station.orders import read_order_file
from station.store import Actor, Store

__all__ = ["ORDER_REF", "DemoOutcome", "hub_running_version", "run_demo", "write_order", "write_station_config"]

ORDER_REF = "DCC-DEMO-0001"
STATION = "demo-station-01"


@dataclass(frozen=True)
class DemoOutcome:
    hub: DemoHub
    chf_id: str
    gpf_id: str
    outcome: str | None
    reason: str | None
    firmware_before: str
    firmware_after: str | None
    smi_chf_firmware: str | None
    smi_gpf_firmware: str | None
    hub_running: str  # what the simulated hub really runs, from its state on disk: the truth the SMI must match

    @property
    def smi_expected(self) -> str | None:
        # The contract (docs/mqtt-api.md): the SMI holds `firmware_after` whenever the station could read it.
        return self.firmware_after

    @property
    def as_expected(self) -> bool:
        return (
            (self.outcome, self.reason) == tuple(self.hub.expect)
            and (self.hub.after is None or self.firmware_after == self.hub.after)
            and self.firmware_after in (None, self.hub_running)
            and self.smi_chf_firmware == self.smi_expected
            and self.smi_gpf_firmware == self.smi_expected
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.hub.name,
            "chf_id": self.chf_id,
            "gpf_id": self.gpf_id,
            "outcome": self.outcome,
            "reason": self.reason,
            "firmware_before": self.firmware_before,
            "firmware_after": self.firmware_after,
            "hub_running": self.hub_running,
            "smi_chf_firmware": self.smi_chf_firmware,
            "smi_gpf_firmware": self.smi_gpf_firmware,
            "expected": {
                "outcome": self.hub.expect[0],
                "reason": self.hub.expect[1],
                "smi_firmware": self.smi_expected,
            },
            "as_expected": self.as_expected,
        }


def hub_running_version(state_dir: Path, initial: str) -> str:
    """What a simulated hub runs, read from its state directory (docs/simulator.md), independently of the station."""
    try:
        return str(json.loads((state_dir / "state.json").read_text())["running_version"])
    except FileNotFoundError:
        return initial


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_station_config(
    world: DemoWorld,
    hubs: list[DemoHub],
    broker_url: str | None,
    baud: int = 460_800,
    *,
    first: int = 1,
    name: str = "station",
) -> Path:
    """A station configuration for a simulated bench of `hubs` in the demo world (no MQTT without a broker), written
    to `{name}.toml` with its store in `state/{name}.db`. Slot and hub numbers start at `first`, so that several
    stations in one world have hubs of their own."""
    lines = [
        "# Written by `reflash demo`: a station over a simulated bench, a private broker.",
        "[station]",
        f'id = "{STATION}"',
        'region = "North"',
        'operator = "demo-operator"',
        'facility_approval = "SSC-TRIAGE-DEMO-0001"',
        f'store = "state/{name}.db"',
        'key = "keys/station.key"',
        "checkpoint_every = 50",
        "",
        "[catalog]",
        'folder = "catalog"',
        'authority_key = "keys/authority.pub"',
        "",
        "[tariff]",
        'currency = "GBP"',
        'REFLASHED = "9.80"',
        "",
    ]
    if broker_url is not None:
        lines += ["[mqtt]", f'url = "{broker_url}"', "republish_after_s = 5", ""]
    for n, hub in enumerate(hubs, first):
        ident = hub.identity
        lines += [
            "[[slots]]",
            f'name = "S{n:02d}"',
            'driver = "sim"',
            f'url = "sim://S{n:02d}"',
            "[slots.options]",
            f'state_dir = "hubs/S{n:02d}"',
            f'manufacturer = "{ident.manufacturer}"',
            f'model = "{ident.model}"',
            f'hardware = "{ident.hardware_version}"',
            f'firmware = "{ident.firmware_version}"',
            f'chf_id = "{device_id(n, 1)}"',
            f'gpf_id = "{device_id(n, 2)}"',
            f"fault = {_toml_string(hub.fault)}",
            f"baud = {baud}",
            "reboot_delay_s = 0.2",
            'trusted_keys = { "121D" = ["keys/maker-121D.pub"], "1072" = ["keys/maker-1072.pub"] }',
            "",
        ]
    path = world.workdir / f"{name}.toml"
    path.write_text("\n".join(lines))
    return path


def write_order(world: DemoWorld, hubs: list[DemoHub], *, first: int = 1, name: str = "order") -> Path:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["order_ref", "requesting_party", "csp_region", "chf_id"])
    for n, hub in enumerate(hubs, first):
        if hub.in_order:
            writer.writerow([ORDER_REF, "DEMO-SUPPLIER", "North", device_id(n, 1)])
    path = world.workdir / f"{name}.csv"
    path.write_text(out.getvalue())
    return path


async def run_demo(
    workdir: Path, slots: int | None = None, *, live: bool | None = None, quiet: bool = False
) -> list[DemoOutcome]:
    """Run the demo in `workdir` (made afresh). Returns each hub's outcome beside the SMI."""
    world = build_demo_world(workdir, CONFIG_DIR)
    hubs = world.scenario.bench(slots)
    # The demo shows its own table; the reporter's connection notices are noise there (restored after, so that a
    # process that goes on, a test run, keeps its logging as it was).
    reporter_log = logging.getLogger("station.reporter")
    level = reporter_log.level
    reporter_log.setLevel(logging.ERROR)
    try:
        with Mosquitto(workdir / "mosquitto") as broker:
            config = load_config(write_station_config(world, hubs, broker.url))
            # The operator's part before the bench runs: import the DCC request and scan the box of hubs in.
            store = config.open_store()
            store.import_order(read_order_file(write_order(world, hubs)))
            for n, _ in enumerate(hubs, 1):
                store.receive(ORDER_REF, device_id(n, 1))
            store.close()
            bridge = DspBridge(broker.url, workdir / "smi.db", name="demo-dsp-bridge")
            bridge_task = asyncio.create_task(bridge.run(), name="dsp-bridge")
            try:
                await asyncio.wait_for(bridge.subscribed.wait(), 15)
                settings = JobSettings(retry_backoff_s=0.2, readback_tries=20, readback_interval_s=0.25)
                await run_station(
                    config, once=True, log_format="none" if quiet else "text", live=live, job_settings=settings
                )
            finally:
                bridge.stop()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(bridge_task, 10)
                bridge.smi.close()
    finally:
        reporter_log.setLevel(level)
    smi = SmiStore(workdir / "smi.db")
    firmware = {row["device_id"]: row["firmware_version"] for row in smi.devices()}
    smi.close()
    store = Store(config.resolve(config.station.store), Actor(STATION, "demo-operator", "SSC-TRIAGE-DEMO-0001"))
    jobs = {job.chf_id: job for job in store.jobs()}
    store.close()
    results = []
    for n, hub in enumerate(hubs, 1):
        chf, gpf = device_id(n, 1), device_id(n, 2)
        job = jobs.get(chf)
        results.append(
            DemoOutcome(
                hub=hub,
                chf_id=chf,
                gpf_id=gpf,
                outcome=job.outcome if job else None,
                reason=job.reason if job else None,
                firmware_before=hub.identity.firmware_version,
                firmware_after=job.firmware_after if job else None,
                smi_chf_firmware=firmware.get(chf),
                smi_gpf_firmware=firmware.get(gpf),
                hub_running=hub_running_version(world.workdir / "hubs" / f"S{n:02d}", hub.identity.firmware_version),
            )
        )
    return results
