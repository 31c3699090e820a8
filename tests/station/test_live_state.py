"""The live state's stream meets a subscriber that stalls and a bench that floods it with changes: the subscriber
gets the newest snapshot, never a queue of old ones, and a quiet bench still beats its heartbeat."""

from __future__ import annotations

import asyncio

from station.live_state import LiveState, StationSnapshot, Totals


def live_counting() -> tuple[LiveState, list[int]]:
    built = [0]

    def build() -> StationSnapshot:
        built[0] += 1
        totals = Totals(hubs=built[0], outcomes={}, hubs_per_hour=0, bytes_per_s=0.0, uptime_s=0.0)
        return StationSnapshot(station="st", stopped=False, updated_at=0.0, slots=[], totals=totals)

    return LiveState(build), built


async def test_a_stalled_subscriber_gets_the_newest_snapshot_not_a_backlog() -> None:
    live, built = live_counting()
    stream = live.subscribe()
    first = await anext(stream)
    assert first.totals.hubs == 1
    for _ in range(10_000):  # a transfer acknowledging windows while the subscriber is busy elsewhere
        live.changed()
    second = await asyncio.wait_for(anext(stream), 1)
    assert second.totals.hubs == 2  # one snapshot for ten thousand changes, built when the subscriber woke
    waiting = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.1)
    assert not waiting.done()  # nothing changed since: it waits
    live.changed()
    assert (await asyncio.wait_for(waiting, 1)).totals.hubs == 3
    await stream.aclose()
    assert built[0] == 3


async def test_a_quiet_bench_still_beats_its_heartbeat() -> None:
    live, built = live_counting()
    stream = live.subscribe(heartbeat_s=0.05)
    await anext(stream)
    await asyncio.wait_for(anext(stream), 1)  # no change, yet a fresh snapshot (status.json's age says alive)
    await stream.aclose()
    assert built[0] == 2
