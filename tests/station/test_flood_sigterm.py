"""`reflash run` with one slot whose hub floods `A5 5A` at line rate (flood-sof@N) and one honest slot: the station
still answers SIGTERM at once, because neither end's receive loop holds the event loop."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from station.config import load_config
from station.demo import build_demo_world
from station.orders import read_order_file
from station.showcase import write_order, write_station_config
from tests.station.conftest import import_and_scan_in

from .test_crash import start_station, wait_for_event


def test_sigterm_is_answered_within_2_s_while_a_hub_floods(tmp_path: Path) -> None:
    world = build_demo_world(tmp_path / "world")
    filler = world.scenario.filler
    hubs = [
        filler.model_copy(update={"name": "flooding hub", "fault": "flood-sof@8192"}),
        filler.model_copy(update={"name": "honest hub"}),
    ]
    # 3 Mbaud: the flood reaches the station's deframer at 300 kB/s, 150 000 false starts a second.
    config_path = write_station_config(world, hubs, broker_url=None, baud=3_000_000)
    config = load_config(config_path)
    store = config.open_store()
    import_and_scan_in(store, read_order_file(write_order(world, hubs)))
    store.close()
    process = start_station(config_path)
    try:
        wait_for_event(process, "job_started")
        time.sleep(1.5)  # the flooding hub reached byte 8192 long ago and floods
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(20)
        answered = time.monotonic() - signalled
    finally:
        process.kill()
        assert process.stdout is not None
        process.stdout.close()
    assert answered < 2.0, answered
