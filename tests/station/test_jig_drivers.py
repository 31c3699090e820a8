"""Jig drivers are found by name through entry points, each checks its own options, and the station imports only the
drivers its slots name: a new vendor's driver is one module and its entry point (tests/station/vendor)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.driver_registry import driver_class, driver_names
from station.config import load_config
from station.daemon import _build_drivers, _StartupError, run_station
from station.demo import DemoWorld, build_demo_world, device_id
from station.orders import read_order_file
from station.showcase import ORDER_REF, write_order, write_station_config

VENDOR = Path(__file__).parent / "vendor"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> DemoWorld:
    return build_demo_world(tmp_path_factory.mktemp("drivers") / "world")


def station_toml(world: DemoWorld, slots: str) -> Path:
    """The demo's station configuration (no broker) with `slots` in place of its own."""
    path = write_station_config(world, [world.scenario.filler], broker_url=None)
    head = path.read_text().split("[[slots]]", 1)[0]
    path.write_text(head + slots)
    return path


async def test_a_vendor_driver_is_one_module_and_its_entry_point(
    world: DemoWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "acme" not in driver_names()
    monkeypatch.syspath_prepend(str(VENDOR))  # as if `pip install acme-jig` had put it in site-packages
    assert "acme" in driver_names()
    assert driver_class("acme").__module__ == "acme_jig"

    chf_id, gpf_id = device_id(1, 1), device_id(1, 2)
    identity = world.scenario.filler.identity.model_copy(update={"chf_id": chf_id, "gpf_id": gpf_id})
    (world.workdir / "acme-hub.json").write_text(identity.model_dump_json())
    path = station_toml(
        world,
        '[[slots]]\nname = "BAY1"\ndriver = "acme"\nurl = "acme://bay/1"\n[slots.options]\n'
        'state_dir = "hubs/acme"\nidentity = "acme-hub.json"\n'
        'trusted_keys = { "121D" = ["keys/maker-121D.pub"], "1072" = ["keys/maker-1072.pub"] }\n',
    )
    config = load_config(path)
    store = config.open_store()
    store.import_order(read_order_file(write_order(world, [world.scenario.filler])))
    assert store.receive(ORDER_REF, chf_id)
    store.close()

    assert await run_station(config, once=True, log_format="json", live=False) == 0

    store = config.open_store()
    jobs = store.jobs()
    store.close()
    assert [(job.slot, job.chf_id, job.outcome) for job in jobs] == [("BAY1", chf_id, "REFLASHED")]
    assert (world.workdir / "hubs/acme").is_dir()  # the relative path option, taken from the config's folder


def test_an_unknown_sim_option_is_named_with_its_slot(world: DemoWorld) -> None:
    path = station_toml(world, '[[slots]]\nname = "S01"\ndriver = "sim"\nurl = "sim://S01"\n[slots.options]\n'
                        'state_dir = "hubs/S01"\nstate_dri = "typo"\n')  # fmt: skip
    with pytest.raises(_StartupError, match=r"slots\[0\] \(S01\): option state_dri: unknown key 'state_dri'"):
        _build_drivers(load_config(path))


def test_a_driver_that_cannot_be_loaded_is_named_with_its_slot(
    world: DemoWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(VENDOR))
    path = station_toml(world, '[[slots]]\nname = "BAY2"\ndriver = "acme-broken"\nurl = "acme://bay/2"\n')
    with pytest.raises(
        _StartupError, match=r"slots\[0\] \(BAY2\): jig driver 'acme-broken' \(acme_jig:NoSuchJig\) cannot"
    ):
        _build_drivers(load_config(path))


def modules_after_building_drivers(config: Path) -> set[str]:
    """What `reflash run` has imported once it has built the drivers of `config`, in a fresh interpreter."""
    code = (
        "import json, sys\n"
        "import station.cli.run, station.daemon\n"
        "from station.config import load_config\n"
        f"station.daemon._build_drivers(load_config({str(config)!r}))\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_run_imports_only_the_drivers_and_transports_its_slots_use(world: DemoWorld, tmp_path: Path) -> None:
    tcp = station_toml(world, '[[slots]]\nname = "A1"\ndriver = "tcp"\nurl = "tcp://127.0.0.1:9"\n')
    loaded = modules_after_building_drivers(tcp)
    assert "drivers.url_jig" in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("simulators", "usb", "libusb_package", "serial")}

    sim = station_toml(world, '[[slots]]\nname = "S01"\ndriver = "sim"\nurl = "sim://S01"\n'
                       '[slots.options]\nstate_dir = "hubs/S01"\n')  # fmt: skip
    assert "simulators.jig" in modules_after_building_drivers(sim)
