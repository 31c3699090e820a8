"""The station remembers the last catalog it accepted: an older one is refused across restarts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from firmware_catalog.catalog_source import build_catalog
from firmware_catalog.keys import load_private_key
from station.config import load_config
from station.daemon import run_station
from station.demo import CONFIG_DIR, build_demo_world
from station.showcase import write_station_config


def rebuild(world_dir: Path, serial: int) -> None:
    source = (CONFIG_DIR / "catalog/example.toml").read_text().replace("serial = 1\n", f"serial = {serial}\n", 1)
    path = world_dir / f"source-{serial}.toml"
    path.write_text(source)
    authority = load_private_key(world_dir / "keys/authority.key")
    build_catalog(path, authority, world_dir / "catalog", datetime.now(UTC), base=world_dir)


async def test_rollback_refused_after_restart(tmp_path: Path) -> None:
    world = build_demo_world(tmp_path / "world")
    config = load_config(write_station_config(world, [world.scenario.filler], broker_url=None))
    rebuild(world.workdir, 2)
    assert await run_station(config, once=True, log_format="json", live=False) == 0
    rebuild(world.workdir, 1)  # an older catalog put back in the folder
    assert await run_station(config, once=True, log_format="json", live=False) == 2
    store = config.open_store()
    offers = [e.data for e in store.audit_entries() if e.kind.startswith("catalog_")]
    store.close()
    assert [(o["code"], o["serial"]) for o in offers][-2:] == [("OK", 2), ("CATALOG_ROLLBACK", None)]
    assert "serial 1 is older than serial 2" in offers[-1]["message"]


async def test_a_jig_that_is_not_there_does_not_stop_the_others(tmp_path: Path) -> None:
    from station.mosquitto import free_port

    world = build_demo_world(tmp_path / "world")
    path = write_station_config(world, [world.scenario.filler], broker_url=None)
    # A second slot whose jig controller does not answer (nothing listens on that port).
    path.write_text(
        path.read_text() + f'\n[[slots]]\nname = "GONE"\ndriver = "tcp"\nurl = "tcp://127.0.0.1:{free_port()}"\n'
    )
    config = load_config(path)
    assert await run_station(config, once=True, log_format="json", live=False) == 1  # one slot unfinished
    store = config.open_store()
    jobs = store.jobs()
    store.close()
    assert [(job.slot, job.outcome) for job in jobs] == [("S01", "UNEXPECTED")]  # processed (no order named it)
