"""The reporter: publishes the outbox to MQTT and settles rows as the DSP acknowledges them. Nothing is lost.

- A row is written to the outbox in the same transaction as the job's final state (station/store.py).
- The reporter publishes it at QoS 1; a successful PUBACK makes it `at_broker`; a PUBACK with a failure reason code
  (an ACL that denies, a message too large) leaves it pending, logged once, retried with backoff. Only the DSP
  bridge's ack makes it `confirmed` (or `rejected`), and only an ack that passes ack.schema.json.
- A row without an ack is published again after its own backoff (republish_after_s doubling to republish_max_s,
  jittered), and not at all while the retained bridge status says no DSP bridge is online; the bridge applies each
  message_id once, so a repeat is harmless.
- One fresh client per connection attempt, reconnect with jittered exponential backoff, a stable client id and a
  persistent session (so acks sent while the station was away are delivered when it returns), at most
  `max_in_flight` publishes outstanding.
- Birth and death: `online` (retained) on every connect, `offline` as the will, and published explicitly before a
  clean shutdown because a normal DISCONNECT suppresses the will; a reporter that fails disconnects with reason
  0x04 so that the broker publishes the will.
- Signed audit checkpoints (contract 1.2) go the way results go: queued in the outbox in the transaction that signs
  them, published at QoS 1, republished until the bridge acks them, because an anchor that can be dropped is no
  anchor. At a clean stop the checkpoint the stop signed is published before `offline`.
- A heartbeat (contract 1.2, retained): the station's figures on connect, every `heartbeat_interval_s` and at stop,
  for the fleet view. Not the birth: a status that changed with every hub would blur presence (birth, will) with
  figures, and the will, written at connect, could only carry stale ones.
- Only the daemon speaks for the station: a one-shot command (`speaks_for_station=False`) uses a client id of its
  own, a clean session, no will, no birth and no subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import ssl
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from station.broker_client import (
    BrokerClient,
    BrokerRefused,
    Outgoing,
    publish_properties,
    raise_for_suback,
    with_correlation,
)
from station.config import MqttConfig, StationConfig
from station.live_state import LiveState
from station.messages import (
    CHANNELS,
    ROOT,
    BridgeStatus,
    ResendRequest,
    SlotProgress,
    StationHeartbeat,
    StationStatus,
    topic,
)
from station.schema_check import PayloadChecker
from station.store import AUDIT_CHECKPOINT, OutboxRow, Store

__all__ = ["Reporter", "client_settings", "publish_outbox", "retry_delay"]

log = logging.getLogger(__name__)
HUB_RESULT = "hub_result"
ORDER_SUMMARY = "order_summary"
# Kinds the DSP bridge acknowledges (DspAck on the response topic): a row of these settles only on that ack.
_ACKED = {HUB_RESULT, AUDIT_CHECKPOINT}
_RETAIN = {channel.name: channel.retain for channel in CHANNELS}
_EXPIRY = {channel.name: channel.expiry_s for channel in CHANNELS}
BRIDGES = f"{ROOT}/STATE/+"
# How soon the reporter tries the store again after it could not read or write it (doubling up to the last).
_STORE_RETRY_FIRST_S = 0.5
_STORE_RETRY_LAST_S = 5.0


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def retry_delay(tries: int, first_s: float, max_s: float) -> float:
    """Seconds before the next try of one message after `tries` tries: first_s doubling to max_s, with jitter
    (between half and all of it) so that rows published together do not come due together again."""
    return float(min(first_s * 2 ** min(tries - 1, 30), max_s) * random.uniform(0.5, 1.0))


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
        with _naming("password_file", resolve(config.password_file)):
            password = resolve(config.password_file).read_text().strip()
    settings["password"] = password
    if tls:
        ca = resolve(config.ca) if config.ca else None
        with _naming("ca", ca):
            context = ssl.create_default_context(cafile=str(ca) if ca else None)
        if config.cert is not None:
            cert, key = resolve(config.cert), resolve(config.key) if config.key is not None else None
            with _naming("cert", cert if key is None else f"{cert} (key {key})"):
                context.load_cert_chain(str(cert), str(key) if key is not None else None)
        settings["tls_context"] = context
    return settings


@contextlib.contextmanager
def _naming(option: str, path: Path | str | None) -> Iterator[None]:
    """ssl and open() say "No such file or directory" or "[X509] PEM lib" without the file: name the option and the
    path, so that the operator knows which of [mqtt]'s files to fix."""
    try:
        yield
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise ValueError(f"{option} {path}: {why}") from exc


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
        telemetry: LiveState | None = None,
        telemetry_interval_s: float = 1.0,
        speaks_for_station: bool = True,
        client_id: str | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.station = station
        self.region = region
        self.birth = birth
        self.batch = batch
        self.telemetry = telemetry
        self.telemetry_interval_s = telemetry_interval_s
        self.speaks_for_station = speaks_for_station
        self.client_id = client_id or (
            f"reflash-station-{station}" if speaks_for_station else f"reflash-{station}-cli-{os.getpid()}"
        )
        self._settings = client_settings(config, resolve)
        self.wake = asyncio.Event()
        # Set whenever outbox rows change state here (published, acked, refused): `run --once` waits on it, not on a
        # timer, for its results to settle.
        self.outbox_changed = asyncio.Event()
        self.connected = asyncio.Event()
        self._stopping = asyncio.Event()
        # PUBACKs the store could not record yet (disk full): recorded first when it can write again, never lost
        # and never published again meanwhile. message_id -> (needs_ack, retry_at)
        self._unrecorded: dict[str, tuple[bool, str]] = {}
        self._store_backoff_s = _STORE_RETRY_FIRST_S
        self._acks = PayloadChecker("ack")
        # Every result goes to one topic with the same response topic: made once, not per message.
        self._result_topic = topic("result", region=region, station=station)
        self._checkpoint_topic = topic("checkpoint", region=region, station=station)
        self._ack_topic = topic("ack", region=region, station=station)
        self._result_properties = publish_properties(response_topic=self._ack_topic)
        self._plain_properties = publish_properties()  # shared: paho never changes a message's properties
        # What `reflash status` shows (the daemon writes it into its status file) and what is logged once.
        self.link: dict[str, Any] = {"connected": False, "since": None, "last_error": None, "client_id": self.client_id}
        self.bridges: dict[str, tuple[int, str]] = {}  # bridge -> (session, state)
        self.refused_publishes = 0
        self.last_refusal: str | None = None
        self.refused_acks = 0
        self.last_ack_at: str | None = None
        self._refusals_said: set[str] = set()
        self._bad_ack_said = False
        self._telemetry_sent: dict[str, dict[str, Any]] = {}
        self.only_kind: str | None = None
        # The station's figures for its heartbeat (the daemon sets it; without it no heartbeat is sent).
        self.heartbeat: Callable[[], dict[str, Any]] | None = None
        self.heartbeat_interval_s = 30.0
        self._heartbeat_fault_said = False

    # -- what the station knows of the link -------------------------------------------------------------------------

    @property
    def bridge_online(self) -> bool | None:
        """True when a DSP bridge says it is online, False when every bridge seen says offline, None when no bridge
        has published a status (a 1.0 bridge): then rows are republished on their backoff as before."""
        if not self.bridges:
            return None
        return any(state == "online" for _, state in self.bridges.values())

    def describe(self) -> dict[str, Any]:
        return {
            "broker": dict(self.link),
            "bridge_online": self.bridge_online,
            "bridges": {name: state for name, (_, state) in sorted(self.bridges.items())},
            "refused_publishes": self.refused_publishes,
            "last_refusal": self.last_refusal,
            "refused_acks": self.refused_acks,
        }

    def _link(self, connected: bool, error: str | None = None) -> None:
        if connected != self.link["connected"] or error is not None:
            self.link.update(connected=connected, since=_iso(datetime.now(UTC)))
        if error is not None:
            self.link["last_error"] = error

    # -- topics and payloads ----------------------------------------------------------------------------------------

    def _status(self, state: str, session: int, *, will: bool = False) -> bytes:
        status = StationStatus.model_validate(
            {
                "schema": "reflash.station-status/1.1",
                "state": state,
                "station": self.station,
                "region": self.region,
                "session": session,
                # The broker publishes a will when the connection dies: the station cannot know that time now.
                "at": None if will else datetime.now(UTC),
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
        if row.kind == AUDIT_CHECKPOINT:
            return self._checkpoint_topic, _RETAIN["checkpoint"]
        return self._result_topic, _RETAIN["result"]

    def _properties(self, row: OutboxRow) -> Properties:
        if row.kind in _ACKED:
            # MQTT v5 request/response: the DSP acks on the response topic, with the message_id as correlation data.
            return with_correlation(self._result_properties, row.message_id.encode())
        return self._plain_properties

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

    def _client(self, session: int) -> BrokerClient:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        will = None
        if self.speaks_for_station:
            properties.SessionExpiryInterval = self.config.session_expiry_s
            will = aiomqtt.Will(
                topic("status", region=self.region, station=self.station),
                self._status("offline", session, will=True),
                qos=1,
                retain=True,
                properties=publish_properties(),
            )
        client = BrokerClient(
            **self._settings,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            # A one-shot command leaves nothing behind at the broker: a clean session that ends with it.
            clean_start=not self.speaks_for_station,
            properties=properties,
            will=will,
            max_inflight_messages=self.config.max_in_flight,
            timeout=10,
        )
        client.will_on_error = self.speaks_for_station
        # We cap publishes in flight ourselves; aiomqtt would warn from 10 on.
        client.pending_calls_threshold = self.config.max_in_flight + 1
        return client

    async def run(self) -> None:
        backoff = 0.25
        while not self._stopping.is_set():
            session = time.time_ns() // 1_000_000
            client = self._client(session)
            try:
                async with client:
                    backoff = 0.25
                    await self._serve(client, session)
            except aiomqtt.MqttError as exc:
                if self.connected.is_set():
                    log.warning("broker connection lost: %s", exc)
                elif self.link["last_error"] != str(exc):
                    log.info("broker not reachable: %s", exc)
                self._link(False, str(exc))
            finally:
                self.connected.clear()
                self._link(False)
            if self._stopping.is_set():
                return
            # Full jitter: many stations reconnecting after a broker restart do not arrive together.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(random.uniform(0, backoff)):
                    await self._stopping.wait()
            backoff = min(backoff * 2, 30.0)

    async def _publish_status(self, client: BrokerClient, state: str, session: int, wait_s: float = 10) -> None:
        status_topic = topic("status", region=self.region, station=self.station)
        try:
            await client.publish_checked(
                status_topic, self._status(state, session), qos=1, retain=True, properties=publish_properties(),
                timeout=wait_s,
            )  # fmt: skip
        except BrokerRefused as exc:
            self._refused("status", str(exc))

    async def _serve(self, client: BrokerClient, session: int) -> None:
        tasks = [
            asyncio.create_task(self._publish_loop(client), name="reporter-publish"),
            asyncio.create_task(self._stopping.wait(), name="reporter-stop"),
        ]
        if self.speaks_for_station:
            ack_topic = self._ack_topic
            resend_topic = topic("resend", region=self.region, station=self.station)
            for where in (ack_topic, resend_topic, BRIDGES):
                try:
                    raise_for_suback(where, await client.subscribe(where, qos=1))
                except BrokerRefused as exc:
                    self._refused("subscribe", str(exc))
            await self._publish_status(client, "online", session)
            tasks.append(asyncio.create_task(self._messages(client), name="reporter-acks"))
            if self.telemetry is not None:
                tasks.append(asyncio.create_task(self._telemetry(client), name="reporter-telemetry"))
            if self.heartbeat is not None:
                tasks.append(asyncio.create_task(self._heartbeats(client, session), name="reporter-heartbeat"))
        self.connected.set()
        self._link(True)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        if self._stopping.is_set() and self.speaks_for_station:
            await self._farewell(client, session)
            await self._publish_status(client, "offline", session, wait_s=5)

    async def _farewell(self, client: BrokerClient, session: int, within_s: float = 0.5) -> None:
        """At a clean stop, before `offline`: the checkpoint that the stop signed (the station signs its tail as it
        stops, and that anchor is worth most at the DSP now, not at the next start) and the last heartbeat. Bounded:
        what does not go now waits in the outbox, or is replaced by the next heartbeat."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                try:
                    rows = self.store.outbox_due(self.batch, _iso(datetime.now(UTC)), kind=AUDIT_CHECKPOINT)
                except self.store.write_errors:
                    rows = []
                if rows:
                    await self._publish(client, rows)
                if self.heartbeat is not None:
                    await self._publish_heartbeat(client, session)

    async def _heartbeats(self, client: BrokerClient, session: int) -> None:
        while True:
            await self._publish_heartbeat(client, session)
            await asyncio.sleep(self.heartbeat_interval_s)

    async def _publish_heartbeat(self, client: BrokerClient, session: int) -> None:
        assert self.heartbeat is not None
        try:
            figures = self.heartbeat()
        except self.store.write_errors:
            return  # the store cannot be read now: the retained heartbeat stays as it was, its `at` ageing
        try:
            heartbeat = StationHeartbeat.model_validate(
                {"schema": "reflash.station-heartbeat/1.2", "station": self.station, "region": self.region,
                 "session": session, "at": datetime.now(UTC), **figures}
            )  # fmt: skip
        except ValueError as exc:  # a fault in the figures: never a reason to stop reporting results
            if not self._heartbeat_fault_said:
                log.error("heartbeat not sent: its figures break the contract: %s", str(exc).splitlines()[0])
                self._heartbeat_fault_said = True
            return
        where = topic("heartbeat", region=self.region, station=self.station)
        try:
            await client.publish_checked(where, heartbeat.model_dump_json(by_alias=True).encode(), qos=1,
                                         retain=_RETAIN["heartbeat"], properties=publish_properties())  # fmt: skip
        except BrokerRefused as exc:
            self._refused("heartbeat", str(exc))

    # -- refusals ---------------------------------------------------------------------------------------------------

    def _refused(self, what: str, reason: str) -> None:
        """Say a refusal once per kind of thing refused and reason, until that kind succeeds again."""
        self.last_refusal = reason
        key = f"{what}: {reason.split(': ', 1)[-1]}"
        if key not in self._refusals_said:
            self._refusals_said.add(key)
            log.error("%s (%s); %s", reason, what, "retrying with backoff" if what in _RETRIED else "not retried")

    def _accepted(self, what: str) -> None:
        said = [key for key in self._refusals_said if key.startswith(f"{what}: ")]
        if said:
            log.warning("the broker accepts %s again", what)
            self._refusals_said.difference_update(said)

    # -- incoming ---------------------------------------------------------------------------------------------------

    def _bridge_status(self, payload: bytes) -> None:
        try:
            status = BridgeStatus.model_validate_json(payload)
        except ValueError:
            return  # a bridge status this version does not read: ignored, as a 1.0 station would
        before = self.bridge_online
        seen = self.bridges.get(status.bridge)
        if seen is None or status.session >= seen[0]:  # a stale will never overrides a newer birth
            self.bridges[status.bridge] = (status.session, status.state)
        if self.bridge_online != before:
            if self.bridge_online:
                log.info("a DSP bridge is online (%s): unconfirmed results are republished again", status.bridge)
            else:
                log.warning("no DSP bridge online (%s went offline): republishing held", status.bridge)
            self.wake.set()

    def _resend(self, payload: bytes) -> None:
        try:
            request = ResendRequest.model_validate_json(payload)
        except ValueError as exc:
            log.warning("refusing a resend request that does not follow the contract: %s", str(exc).splitlines()[0])
            return
        try:
            queued = self.store.outbox_resend(request.from_sequence, request.to_sequence, request.bridge)
        except self.store.write_errors:
            log.error("a resend request from %s could not be recorded; the DSP should ask again", request.bridge)
            return
        log.info(
            "%s asked for results %d..%d again: %d queued",
            request.bridge, request.from_sequence, request.to_sequence, queued,
        )  # fmt: skip
        self.wake.set()

    async def _messages(self, client: aiomqtt.Client) -> None:
        pending: list[tuple[str, str, str | None]] = []
        async for message in client.messages:
            if message.topic.matches(BRIDGES):
                self._bridge_status(bytes(message.payload))
                continue
            if str(message.topic).endswith("/resend"):
                self._resend(bytes(message.payload))
                continue
            try:
                data = json.loads(message.payload)
            except (ValueError, TypeError):
                data = None
            problem = self._acks.problem(data) if data is not None else "(message): not JSON"
            if problem is not None:
                # Refused: the row stays unconfirmed and is published again; a bridge that keeps to the contract
                # acks it again. Counted, and said once.
                self.refused_acks += 1
                if not self._bad_ack_said:
                    log.warning("refusing an ack that ack.schema.json rejects, on %s: %s", message.topic, problem)
                    self._bad_ack_said = True
                continue
            pending.append((data["message_id"], data["result"], data["reason"]))
            if len(client.messages) == 0 or len(pending) >= self.batch:
                try:
                    self.store.outbox_acked(pending)
                    self.outbox_changed.set()
                except self.store.write_errors:
                    # The store said it cannot write. Keep the acks and record them with the next one; if none
                    # comes, the rows stay at_broker, are published again, and the bridge acks them again.
                    continue
                self.last_ack_at = _iso(datetime.now(UTC))
                pending = []

    # -- outgoing ---------------------------------------------------------------------------------------------------

    async def _telemetry(self, client: aiomqtt.Client) -> None:
        """Slot progress at QoS 0, only when a slot's view changed: lossy by design, never queued, never in the
        outbox, and expiring (MQTT v5 message expiry) so that a late reader gets nothing stale."""
        assert self.telemetry is not None
        properties = publish_properties(expiry_s=_EXPIRY["slot"])
        # A subscriber of the live state: woken by a change, at most once per interval; each slot that has a hub
        # and changed since it was last sent is published.
        async for snapshot in self.telemetry.subscribe(min_interval_s=self.telemetry_interval_s):
            for slot in snapshot.slots:
                if slot.chf_id is None:
                    continue
                view = {"slot": slot.name, "state": slot.state.value, "chf_id": slot.chf_id,
                        "bytes_done": slot.bytes_done, "bytes_total": slot.bytes_total,
                        "bytes_per_s": slot.bytes_per_s}  # fmt: skip
                if self._telemetry_sent.get(slot.name) == view:
                    continue
                progress = SlotProgress.model_validate(
                    {"schema": "reflash.slot-progress/1.1", "station": self.station, "at": datetime.now(UTC), **view}
                )
                where = topic("slot", region=self.region, station=self.station, slot=progress.slot)
                await client.publish(
                    where, progress.model_dump_json(by_alias=True).encode(), qos=0, properties=properties
                )
                self._telemetry_sent[slot.name] = view

    def _record_published(self) -> None:
        """Write the PUBACKs not yet recorded. Raises one of the store's write errors when it still cannot."""
        if not self._unrecorded:
            return
        for needs_ack in (True, False):
            chosen = {m: retry for m, (ack, retry) in self._unrecorded.items() if ack is needs_ack}
            self.store.outbox_published(list(chosen), needs_ack=needs_ack, retry_at=chosen)
            for message_id in chosen:
                del self._unrecorded[message_id]
        self.outbox_changed.set()

    async def _store_pause(self) -> None:
        """After a store error: wait (doubling, up to a few seconds) before trying the store again."""
        await self.wait_stopped(self._store_backoff_s)
        self._store_backoff_s = min(self._store_backoff_s * 2, _STORE_RETRY_LAST_S)

    async def _publish_loop(self, client: BrokerClient) -> None:
        while True:
            try:
                # The disk may be full or read-only: the store says so once; the reporter keeps its connection,
                # publishes nothing it cannot record, and catches up when the store works again.
                self._record_published()
                # No bridge online: what is at the broker waits there (the bridges' persistent sessions queue it);
                # publishing it again would only add copies. New and refused rows still go.
                republish = self.bridge_online is not False or not self.speaks_for_station
                rows = self.store.outbox_due(
                    self.batch, _iso(datetime.now(UTC)), republish=republish, kind=self.only_kind
                )
            except self.store.write_errors:
                await self._store_pause()
                continue
            self._store_backoff_s = _STORE_RETRY_FIRST_S
            if rows:
                await self._publish(client, rows)
                continue
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(self.config.republish_after_s, 1.0)):
                    await self.wake.wait()

    def _retry_at(self, tries: int) -> str:
        delay = retry_delay(tries, self.config.republish_after_s, self.config.republish_max_s)
        return _iso(datetime.now(UTC) + timedelta(seconds=delay))

    def _outgoing(self, row: OutboxRow) -> Outgoing:
        where, retain = self._topic_for(row)
        return Outgoing(where, row.payload.encode(), retain, self._properties(row))

    async def _publish(self, client: BrokerClient, rows: list[OutboxRow]) -> None:
        outcomes = await client.publish_window([self._outgoing(row) for row in rows], self.config.max_in_flight)
        results = list(zip(rows, outcomes, strict=True))
        done = [row for row, outcome in results if outcome is None]
        refused = [(row, outcome) for row, outcome in results if isinstance(outcome, BrokerRefused)]
        # Record what the broker took even when the connection broke part way through; what the store cannot
        # record now is held and recorded first when it can (`_record_published`).
        self._unrecorded.update({r.message_id: (r.kind in _ACKED, self._retry_at(r.publishes + 1)) for r in done})
        with contextlib.suppress(*self.store.write_errors):
            self._record_published()
        for kind in {row.kind for row in done}:
            self._accepted(kind)
        if refused:
            self.refused_publishes += len(refused)
            for row, exc in refused:
                self._refused(row.kind, str(exc))
            with contextlib.suppress(*self.store.write_errors):
                self.store.outbox_refused(
                    [(row.message_id, str(exc), self._retry_at(row.refusals + 1)) for row, exc in refused]
                )
                self.outbox_changed.set()
        failure = next((o for _, o in results if o is not None and not isinstance(o, BrokerRefused)), None)
        if failure is not None:
            raise failure


_RETRIED = {HUB_RESULT, ORDER_SUMMARY, AUDIT_CHECKPOINT}


async def publish_outbox(store: Store, config: StationConfig, within_s: float) -> str:
    """For a one-shot command when no daemon runs: publish the pending order summaries with a client id of the
    command's own (never the daemon's: that would take over its session), no will and no status, until the broker
    has taken them or `within_s` passes. Returns `published`, `refused: <reason>` or `unreachable`. Hub results are
    left to the daemon, which holds the acks' session."""
    assert config.mqtt is not None
    section = config.station
    reporter = Reporter(store, config.mqtt, station=section.id, region=section.region, birth={},
                        resolve=config.resolve, speaks_for_station=False)  # fmt: skip
    reporter.only_kind = ORDER_SUMMARY

    def waiting() -> int:
        return store.outbox.unsent(ORDER_SUMMARY)

    task = asyncio.create_task(reporter.run())
    try:
        async with asyncio.timeout(within_s):
            while waiting():  # noqa: ASYNC110 -- the store is the thing to watch
                await asyncio.sleep(0.05)
    except TimeoutError:
        pass
    finally:
        reporter.stop()
        await task
    if reporter.refused_publishes:
        return f"refused: {reporter.last_refusal}"
    return "published" if not waiting() else "unreachable"
