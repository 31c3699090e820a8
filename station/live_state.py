"""The station's live state as data, and its one stream: every view of a running station subscribes to it.

The bench publishes (`LiveState.changed()`) whenever a slot changes; a subscriber waits for the next change and gets a
frozen `StationSnapshot` built when it wakes, so a slow subscriber skips states, never queues them, and a fast bench
costs nothing while nobody looks. The status file (status.json, whose JSON Schema docs/status-file.schema.json is
generated from `StationSnapshot`), the live table, MQTT slot telemetry and the bench page are all subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict

from station.slot import SlotSnapshot

__all__ = ["LiveState", "StationSnapshot", "Totals", "status_schema"]

STATUS_SCHEMA_ID = "https://reflash.example/schemas/status-file.schema.json"


class Totals(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    hubs: int  # hubs that got an outcome since the station started
    outcomes: dict[str, int]  # by outcome
    hubs_per_hour: int  # over the last 10 minutes (docs/station.md)
    bytes_per_s: float  # every slot's transfer rate, added
    uptime_s: float


class StationSnapshot(BaseModel):
    """The whole bench at one moment: what `reflash status` shows and status.json holds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    station: str
    stopped: bool  # the station has stopped: this is its last word
    updated_at: float  # Unix time; a file older than 5 s is from a station that is not running
    slots: list[SlotSnapshot]
    totals: Totals
    # The DSP link (docs/station.md, "reflash status"): the broker, bridges, outbox backlog; null without [mqtt].
    reporting: dict[str, Any] | None = None
    reporting_error: str | None = None  # the store could not be read for the outbox's figures


def status_schema() -> dict[str, Any]:
    """The JSON Schema of status.json, generated from the model (a test keeps docs/schemas/status.schema.json equal)."""
    schema = StationSnapshot.model_json_schema(mode="serialization")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": STATUS_SCHEMA_ID, **schema}


class LiveState:
    """One publisher, any number of subscribers, newest state only."""

    def __init__(self, build: Callable[[], StationSnapshot]) -> None:
        self._build = build
        self._version = 0
        self._wakers: set[asyncio.Event] = set()

    def changed(self) -> None:
        """Something a view shows has changed (cheap: called on every acknowledged window of a transfer)."""
        self._version += 1
        for waker in self._wakers:
            waker.set()

    def snapshot(self) -> StationSnapshot:
        return self._build()

    async def subscribe(
        self, *, min_interval_s: float = 0.0, heartbeat_s: float | None = None
    ) -> AsyncGenerator[StationSnapshot, None]:
        """Snapshots: one now, then one after each change, at most one per `min_interval_s`, and at least one per
        `heartbeat_s` (for a file whose freshness says the station is alive) even when nothing changed."""
        waker = asyncio.Event()
        self._wakers.add(waker)
        loop = asyncio.get_running_loop()
        try:
            while True:
                seen = self._version
                waker.clear()
                yield self._build()
                if min_interval_s > 0:
                    await asyncio.sleep(min_interval_s)
                if self._version != seen:
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(None if heartbeat_s is None else loop.time() + heartbeat_s):
                        await waker.wait()
        finally:
            self._wakers.discard(waker)


if __name__ == "__main__":  # python -m station.live_state > docs/status-file.schema.json
    import json

    print(json.dumps(status_schema(), indent=2))
