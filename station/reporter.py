"""The reporter: publishes the outbox to MQTT and settles rows as the DSP acknowledges them. Nothing is lost.

- A row is written to the outbox in the same transaction as the job's final state (station/store.py).
- The reporter publishes it at QoS 1; PUBACK makes it `at_broker`; only the DSP bridge's ack makes it `confirmed`
  (or `rejected`). Rows not confirmed within `republish_after_s` are published again, and on every reconnect all
  unconfirmed rows are; the bridge applies each message_id once, so a repeat is harmless.
- One fresh aiomqtt client per connection attempt, reconnect with jittered exponential backoff, a stable client id
  and a persistent session (so acks sent while the station was away are delivered when it returns), at most
  `max_in_flight` publishes outstanding.
- Birth and death: `online` (retained) on every connect, `offline` as the will, and published explicitly before a
  clean shutdown because a normal DISCONNECT suppresses the will.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import sqlite3
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from station.config import MqttConfig, StationConfig
from station.messages import CHANNELS, DspAck, SlotProgress, StationStatus, topic
from station.store import OutboxRow, Store

__all__ = ["Reporter", "client_settings", "publish_outbox"]

log = logging.getLogger(__name__)
HUB_RESULT = "hub_result"
ORDER_SUMMARY = "order_summary"
_RETAIN = {channel.name: channel.retain for channel in CHANNELS}
# How soon the reporter tries the store again after it could not read or write it (doubling up to the last).
_STORE_RETRY_FIRST_S = 0.5
_STORE_RETRY_LAST_S = 5.0


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def client_settings(config: MqttConfig, resolve: Callable[[Path], Path]) -> dict[str, Any]:
    """aiomqtt.Client keyword arguments for a broker URL, credentials and TLS. The password is never logged."""
    parts = urlsplit(config.url)
    tls = parts.scheme == "mqtts"
    settings: dict[str, Any] = {
        "hostname": parts.hostname or "localhost",
        "port": parts.port or (8883 if tls else 1883),
        "username": config.username,
    }
    password = os.environ.get(config.password_env)
    if config.password_file is not None:
        password = resolve(config.password_file).read_text().strip()
    settings["password"] = password
    if tls:
        context = ssl.create_default_context(cafile=str(resolve(config.ca)) if config.ca else None)
        if config.cert is not None:
            context.load_cert_chain(
                str(resolve(config.cert)), str(resolve(config.key)) if config.key is not None else None
            )
        settings["tls_context"] = context
    return settings


class Reporter:
    """Runs until `stop()`; safe to start before the broker exists and to keep running while it is away."""

    def __init__(
        self,
        store: Store,
        config: MqttConfig,
        *,
        station: str,
        region: str,
        birth: dict[str, Any],
        resolve: Callable[[Path], Path] = lambda p: p,
        batch: int = 500,
        telemetry: Callable[[], list[dict[str, Any]]] | None = None,
        telemetry_interval_s: float = 1.0,
    ) -> None:
        self.store = store
        self.config = config
        self.station = station
        self.region = region
        self.birth = birth
        self.batch = batch
        self.telemetry = telemetry
        self.telemetry_interval_s = telemetry_interval_s
        self._settings = client_settings(config, resolve)
        self.wake = asyncio.Event()
        self.connected = asyncio.Event()
        self._stopping = asyncio.Event()
        # PUBACKs the store could not record yet (disk full): recorded first when it can write again, never lost
        # and never published again meanwhile. (message_id, needs_ack)
        self._unrecorded: dict[str, bool] = {}
        self._store_backoff_s = _STORE_RETRY_FIRST_S

    # -- topics and payloads ----------------------------------------------------------------------------------------

    def _status(self, state: str, session: int) -> bytes:
        status = StationStatus.model_validate(
            {
                "schema": "reflash.station-status/1",
                "state": state,
                "station": self.station,
                "region": self.region,
                "session": session,
                "at": datetime.now(UTC),
                **self.birth,
            }
        )
        return status.model_dump_json(by_alias=True).encode()

    def _topic_for(self, row: OutboxRow) -> tuple[str, bool]:
        """Where a row goes, and whether the broker retains it (docs/mqtt-api.md)."""
        if row.kind == ORDER_SUMMARY:
            order_ref = json.loads(row.payload)["order_ref"]
            channel = "order"
            return topic(channel, region=self.region, station=self.station, order_ref=order_ref), _RETAIN[channel]
        return topic("result", region=self.region, station=self.station), _RETAIN["result"]

    # -- life cycle -------------------------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()
        self.wake.set()

    async def wait_stopped(self, seconds: float) -> bool:
        """Wait up to `seconds` for `stop()`; True when stopped."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        return self._stopping.is_set()

    async def run(self) -> None:
        backoff = 0.25
        while not self._stopping.is_set():
            session = time.time_ns() // 1_000_000
            will = aiomqtt.Will(
                topic("status", region=self.region, station=self.station),
                self._status("offline", session),
                qos=1,
                retain=True,
            )
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self.config.session_expiry_s
            client = aiomqtt.Client(
                **self._settings,
                identifier=f"reflash-station-{self.station}",
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=False,
                properties=properties,
                will=will,
                max_inflight_messages=self.config.max_in_flight,
                timeout=10,
            )
            # We cap publishes in flight ourselves; aiomqtt would warn from 10 on.
            client.pending_calls_threshold = self.config.max_in_flight + 1
            try:
                async with client:
                    backoff = 0.25
                    await self._serve(client, session)
            except aiomqtt.MqttError as exc:
                if self.connected.is_set():
                    log.warning("broker connection lost: %s", exc)
                else:
                    log.info("broker not reachable: %s", exc)
            finally:
                self.connected.clear()
            if self._stopping.is_set():
                return
            # Full jitter: many stations reconnecting after a broker restart do not arrive together.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(random.uniform(0, backoff)):
                    await self._stopping.wait()
            backoff = min(backoff * 2, 30.0)

    async def _serve(self, client: aiomqtt.Client, session: int) -> None:
        status_topic = topic("status", region=self.region, station=self.station)
        await client.subscribe(topic("ack", region=self.region, station=self.station), qos=1)
        await client.publish(status_topic, self._status("online", session), qos=1, retain=True)
        self.connected.set()
        tasks = [
            asyncio.create_task(self._acks(client), name="reporter-acks"),
            asyncio.create_task(self._publish_loop(client), name="reporter-publish"),
            asyncio.create_task(self._stopping.wait(), name="reporter-stop"),
        ]
        if self.telemetry is not None:
            tasks.append(asyncio.create_task(self._telemetry(client), name="reporter-telemetry"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        if self._stopping.is_set():
            await client.publish(status_topic, self._status("offline", session), qos=1, retain=True, timeout=5)

    async def _telemetry(self, client: aiomqtt.Client) -> None:
        """Slot progress at QoS 0: lossy by design, never queued, never in the outbox."""
        assert self.telemetry is not None
        while True:
            for view in self.telemetry():
                progress = SlotProgress.model_validate(
                    {"schema": "reflash.slot-progress/1", "station": self.station, "at": datetime.now(UTC), **view}
                )
                where = topic("slot", region=self.region, station=self.station, slot=progress.slot)
                await client.publish(where, progress.model_dump_json(by_alias=True).encode(), qos=0)
            await asyncio.sleep(self.telemetry_interval_s)

    async def _acks(self, client: aiomqtt.Client) -> None:
        pending: list[tuple[str, str, str | None]] = []
        async for message in client.messages:
            try:
                ack = DspAck.model_validate_json(message.payload)
            except ValidationError as exc:
                # The row stays unconfirmed and is published again; the bridge will ack it again.
                log.warning("ignoring an unreadable ack on %s: %s", message.topic, exc.errors()[0]["msg"])
                continue
            pending.append((str(ack.message_id), ack.result, ack.reason))
            if len(client.messages) == 0 or len(pending) >= self.batch:
                try:
                    self.store.outbox_acked(pending)
                except sqlite3.OperationalError:
                    # The store said it cannot write. Keep the acks and record them with the next one; if none
                    # comes, the rows stay at_broker, are published again, and the bridge acks them again.
                    continue
                pending = []

    def _record_published(self) -> None:
        """Write the PUBACKs not yet recorded. Raises sqlite3.OperationalError when the store still cannot."""
        if not self._unrecorded:
            return
        needs_ack = [m for m, ack in self._unrecorded.items() if ack]
        self.store.outbox_published(needs_ack)
        for message_id in needs_ack:
            del self._unrecorded[message_id]
        self.store.outbox_published(list(self._unrecorded), needs_ack=False)
        self._unrecorded.clear()

    async def _store_pause(self) -> None:
        """After a store error: wait (doubling, up to a few seconds) before trying the store again."""
        await self.wait_stopped(self._store_backoff_s)
        self._store_backoff_s = min(self._store_backoff_s * 2, _STORE_RETRY_LAST_S)

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        # On (re)connect everything unconfirmed goes again: `cutoff` is the connect time until the backlog is drained.
        cutoff: datetime | None = datetime.now(UTC)
        while True:
            horizon = cutoff or datetime.now(UTC) - timedelta(seconds=self.config.republish_after_s)
            try:
                # The disk may be full or read-only: the store says so once; the reporter keeps its connection,
                # publishes nothing it cannot record, and catches up when the store works again.
                self._record_published()
                rows = self.store.outbox_due(self.batch, _iso(horizon))
            except sqlite3.OperationalError:
                await self._store_pause()
                continue
            self._store_backoff_s = _STORE_RETRY_FIRST_S
            if len(rows) < self.batch:
                cutoff = None
            if rows:
                await self._publish(client, rows)
                continue
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(self.config.republish_after_s, 1.0)):
                    await self.wake.wait()

    async def _publish(self, client: aiomqtt.Client, rows: list[OutboxRow]) -> None:
        limit = asyncio.Semaphore(self.config.max_in_flight)

        async def one(row: OutboxRow) -> OutboxRow:
            async with limit:
                where, retain = self._topic_for(row)
                await client.publish(where, row.payload.encode(), qos=1, retain=retain)
                return row

        results = await asyncio.gather(*(one(row) for row in rows), return_exceptions=True)
        done = [r for r in results if isinstance(r, OutboxRow)]
        # Record what the broker took even when the connection broke part way through; what the store cannot
        # record now is held and recorded first when it can (`_record_published`).
        self._unrecorded.update({r.message_id: r.kind == HUB_RESULT for r in done})
        with contextlib.suppress(sqlite3.OperationalError):
            self._record_published()
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            raise failure


async def publish_outbox(store: Store, config: StationConfig, within_s: float) -> bool:
    """Run a reporter until nothing is pending (PUBACK for every row), or `within_s` passes. For commands that
    queue a message outside `reflash run` (an order summary on close)."""
    assert config.mqtt is not None
    section = config.station
    birth = {"software_version": version("reflash-station"), "facility": section.facility_approval, "slots": 0}
    reporter = Reporter(store, config.mqtt, station=section.id, region=section.region, birth=birth,
                        resolve=config.resolve)  # fmt: skip
    task = asyncio.create_task(reporter.run())
    try:
        async with asyncio.timeout(within_s):
            while store.outbox_counts()["pending"]:  # noqa: ASYNC110 -- the store is the thing to watch
                await asyncio.sleep(0.05)
        return True
    except TimeoutError:
        return False
    finally:
        reporter.stop()
        await task
