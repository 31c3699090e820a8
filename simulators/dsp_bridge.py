"""The DSP update bridge: the DSP's side of the contract, so that results can be followed into an SMI table.

It subscribes to every station's results with a shared subscription (several bridges share the load), validates
each message against the published JSON Schema (docs/schemas/result.schema.json: what a DSP integrates against, not
the station's code), applies the firmware version to both the CHF and GPF rows of an SMI table in SQLite exactly
once per `message_id`, and acks on the station's ack topic: `applied`, `duplicate` or `rejected` with the reason. A
malformed message is kept for inspection and never applied.

Exactly once: the SMI update and the record of the message_id are one transaction; the ack follows the commit. If
the bridge dies between the two, the station republishes, the bridge finds the message_id already applied and acks
`duplicate`.

Contract 1.1: it accepts results of 1.0 and 1.1 (each checked against its own version's schema), acks on the
result's MQTT v5 response topic with its correlation data (a 1.0 station sends none: the ack topic beside the
result's), and says it is there with a retained `reflash/v1/STATE/{name}` (online on connect, offline as its will
and before it stops), so that stations hold republishing while no bridge is online.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sqlite3
import ssl
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from station.broker_client import BrokerClient, BrokerRefused, publish_properties, raise_for_suback
from station.schema_check import SCHEMAS, PayloadChecker

__all__ = ["SCHEMAS", "DspBridge", "SmiStore", "SmiStoreError"]

log = logging.getLogger(__name__)
RESULTS = "reflash/v1/+/+/result"
STATE = "reflash/v1/STATE"
ACKS_IN_FLIGHT = 100


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SmiStoreError(Exception):
    """The SMI database cannot be used (not SQLite, or not a bridge's); the message names the file."""


class SmiStore:
    """The SMI rows the bridge maintains, the message_ids it has applied, and the messages it rejected."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise SmiStoreError(f"{path}: cannot be used as the SMI database: {exc}") from exc

    def _open(self) -> None:
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS smi_devices (
                device_id TEXT PRIMARY KEY,
                device_type TEXT NOT NULL CHECK (device_type IN ('CHF', 'GPF')),
                chf_id TEXT NOT NULL,
                manufacturer TEXT,
                model TEXT,
                firmware_version TEXT,
                updated_at TEXT NOT NULL,
                message_id TEXT NOT NULL,
                station TEXT,
                sequence INTEGER,
                finished_at TEXT
            );
            CREATE TABLE IF NOT EXISTS applied (
                message_id TEXT PRIMARY KEY,
                station TEXT NOT NULL,
                chf_id TEXT NOT NULL,
                outcome TEXT NOT NULL,
                firmware_version TEXT,
                applied_at TEXT NOT NULL
            );
            CREATE TABLE IF NOT EXISTS rejected (
                id INTEGER PRIMARY KEY,
                message_id TEXT,
                topic TEXT NOT NULL,
                payload BLOB NOT NULL,
                reason TEXT NOT NULL,
                at TEXT NOT NULL
            );
            """
        )
        # An SMI made before the row knew which result set it: the columns that order results are added empty.
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(smi_devices)")}
        for column, kind in (("station", "TEXT"), ("sequence", "INTEGER"), ("finished_at", "TEXT")):
            if column not in columns:
                self._db.execute(f"ALTER TABLE smi_devices ADD COLUMN {column} {kind}")

    def close(self) -> None:
        self._db.close()

    def apply(self, results: list[dict[str, Any]]) -> list[str]:
        """Apply valid results in one transaction; for each, `applied` or `duplicate` (its message_id was seen)."""
        now = _now()
        outcomes: list[str] = []
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for result in results:
                # Whatever the outcome, `firmware_after` is what the station read from the hub as the job ended
                # (docs/mqtt-api.md); null means it could not read it, or could not trust it: the SMI keeps its row.
                version = result["firmware_after"]
                inserted = self._db.execute(
                    "INSERT OR IGNORE INTO applied "
                    "(message_id, station, chf_id, outcome, firmware_version, applied_at) VALUES (?,?,?,?,?,?)",
                    (result["message_id"], result["station"], result["chf_id"], result["outcome"], version, now),
                ).rowcount
                if not inserted:
                    outcomes.append("duplicate")
                    continue
                outcomes.append("applied")
                if version is None:
                    continue
                for device_id, device_type in ((result["chf_id"], "CHF"), (result["gpf_id"], "GPF")):
                    # Results of one hub can arrive out of order (republished, or taken by different bridges of the
                    # group): a row takes only a newer result than the one that set it. Newer is a higher sequence
                    # from the same station, else a later finished_at.
                    self._db.execute(
                        "INSERT INTO smi_devices (device_id, device_type, chf_id, manufacturer, model, "
                        "firmware_version, updated_at, message_id, station, sequence, finished_at) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?,?) "
                        "ON CONFLICT(device_id) DO UPDATE SET firmware_version = excluded.firmware_version, "
                        "updated_at = excluded.updated_at, message_id = excluded.message_id, "
                        "station = excluded.station, sequence = excluded.sequence, finished_at = excluded.finished_at "
                        "WHERE CASE WHEN excluded.station IS smi_devices.station AND excluded.sequence IS NOT NULL "
                        "AND smi_devices.sequence IS NOT NULL THEN excluded.sequence > smi_devices.sequence "
                        "ELSE excluded.finished_at > coalesce(smi_devices.finished_at, '') END",
                        (device_id, device_type, result["chf_id"], result["manufacturer"], result["model"], version,
                         now, result["message_id"], result["station"], result.get("sequence"),
                         result["finished_at"]),
                    )  # fmt: skip
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return outcomes

    def reject(self, message_id: str | None, topic: str, payload: bytes, reason: str) -> None:
        self._db.execute(
            "INSERT INTO rejected (message_id, topic, payload, reason, at) VALUES (?,?,?,?,?)",
            (message_id, topic, payload, reason, _now()),
        )

    def devices(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self._db.execute(
            "SELECT device_id, device_type, chf_id, manufacturer, model, firmware_version, updated_at, message_id "
            "FROM smi_devices ORDER BY chf_id, device_type"
        )]  # fmt: skip

    def forget(self, message_ids: list[str]) -> None:
        """Lose what was applied for these messages, as a DSP restored from an old backup would (for tests of the
        resend request: the station publishes them again and the bridge applies them as new)."""
        self._db.executemany("DELETE FROM applied WHERE message_id = ?", [(m,) for m in message_ids])

    def applied_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM applied").fetchone()[0])

    def rejected(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self._db.execute("SELECT id, message_id, topic, reason, at FROM rejected")]


class DspBridge:
    """Runs until `stop()`; reconnects with jittered backoff; acks every message it takes."""

    def __init__(
        self, broker: str, db: Path, *, name: str = "dsp-bridge-1", group: str = "dsp-bridge",
        tls_context: ssl.SSLContext | None = None,
    ) -> None:  # fmt: skip
        """`tls_context` for an mqtts:// broker that wants a client certificate (a central broker: config/fleet/);
        without it, mqtts:// uses the system's CAs and no certificate."""
        parts = urlsplit(broker)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"--broker must be mqtt://host:port or mqtts://host:port, got {broker!r}")
        self.hostname = parts.hostname
        self.port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self.tls = parts.scheme == "mqtts"
        self.tls_context = tls_context
        self.name = name
        self.group = group
        self.smi = SmiStore(db)
        self.checker = PayloadChecker("result")
        self.subscribed = asyncio.Event()
        self.refused_acks = 0
        self._stopping = asyncio.Event()

    def handle(
        self, messages: list[tuple[str, bytes]] | list[tuple[str, bytes, str | None]]
    ) -> list[tuple[str, dict[str, Any]]]:
        """Validate and apply a batch of (topic, payload[, response topic]); return the (topic, ack) pairs to send.
        A message without a readable message_id cannot be acked: it is kept in `rejected` and logged."""
        valid: list[tuple[str, dict[str, Any]]] = []
        acks: list[tuple[str, dict[str, Any]]] = []
        for topic, payload, *respond in messages:
            # The ack goes beside the result: that is also the MQTT v5 response topic a 1.1 station names. A response
            # topic elsewhere would aim acks at another station: logged, and not followed.
            ack_topic = topic.rsplit("/", 1)[0] + "/ack"
            if respond and respond[0] not in (None, ack_topic):
                log.warning("result on %s names response topic %s; acking on %s", topic, respond[0], ack_topic)
            message_id: str | None = None
            try:
                data = json.loads(payload)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                reason = f"not JSON: {exc}"
            else:
                if isinstance(data, dict) and isinstance(data.get("message_id"), str):
                    message_id = data["message_id"]
                problem = self.checker.problem(data)
                if problem is None:
                    valid.append((ack_topic, data))
                    continue
                reason = problem
            self.smi.reject(message_id, topic, payload, reason)
            log.warning("rejected a result on %s: %s", topic, reason)
            if message_id is not None:
                acks.append((ack_topic, self._ack(message_id, "rejected", reason)))
        outcomes = self.smi.apply([data for _, data in valid])
        acks += [(t, self._ack(data["message_id"], o, None)) for (t, data), o in zip(valid, outcomes, strict=True)]
        return acks

    def _ack(self, message_id: str, result: str, reason: str | None) -> dict[str, Any]:
        return {
            "schema": "reflash.dsp-ack/1.1",
            "message_id": message_id,
            "result": result,
            "reason": reason,
            "bridge": self.name,
            "at": _now(),
        }

    def stop(self) -> None:
        self._stopping.set()

    def _status(self, state: str, session: int, *, will: bool = False) -> bytes:
        status = {"schema": "reflash.bridge-status/1.1", "state": state, "bridge": self.name, "group": self.group,
                  "session": session, "at": None if will else _now()}  # fmt: skip
        return json.dumps(status).encode()

    async def run(self) -> None:
        backoff = 0.25
        state_topic = f"{STATE}/{self.name}"
        while not self._stopping.is_set():
            session = time.time_ns() // 1_000_000
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            # A persistent session: results that arrive while the bridge is away are queued for it by the broker.
            properties.SessionExpiryInterval = 14 * 24 * 3600
            client = BrokerClient(
                self.hostname,
                self.port,
                identifier=f"reflash-{self.name}",
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=False,
                properties=properties,
                will=aiomqtt.Will(state_topic, self._status("offline", session, will=True), qos=1, retain=True,
                                  properties=publish_properties()),
                tls_context=self.tls_context if self.tls else None,
                tls_params=aiomqtt.TLSParameters() if self.tls and self.tls_context is None else None,
                timeout=10,
            )  # fmt: skip
            client.will_on_error = True
            client.pending_calls_threshold = ACKS_IN_FLIGHT + 1
            try:
                async with client:
                    backoff = 0.25
                    shared = f"$share/{self.group}/{RESULTS}"
                    raise_for_suback(shared, await client.subscribe(shared, qos=1))
                    await client.publish_checked(state_topic, self._status("online", session), qos=1, retain=True,
                                                 properties=publish_properties())  # fmt: skip
                    self.subscribed.set()
                    await self._serve(client)
                    if self._stopping.is_set():
                        offline = self._status("offline", session)
                        await client.publish_checked(state_topic, offline, qos=1, retain=True,
                                                     properties=publish_properties(), timeout=5)  # fmt: skip
            except aiomqtt.MqttError as exc:
                log.log(logging.ERROR if isinstance(exc, BrokerRefused) else logging.INFO,
                        "bridge: broker connection: %s", exc)  # fmt: skip
            finally:
                self.subscribed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(random.uniform(0, backoff)):
                    await self._stopping.wait()
            backoff = min(backoff * 2, 10.0)

    async def _serve(self, client: BrokerClient) -> None:
        consume = asyncio.create_task(self._consume(client), name="bridge-consume")
        stop = asyncio.create_task(self._stopping.wait(), name="bridge-stop")
        try:
            await asyncio.wait({consume, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (consume, stop):
                task.cancel()
            await asyncio.gather(consume, stop, return_exceptions=True)
        if consume.done() and not consume.cancelled() and consume.exception() is not None:
            raise consume.exception()  # type: ignore[misc]

    async def _consume(self, client: BrokerClient) -> None:
        limit = asyncio.Semaphore(ACKS_IN_FLIGHT)

        async def send(ack_topic: str, ack: dict[str, Any]) -> None:
            async with limit:
                properties = publish_properties(correlation=ack["message_id"].encode())
                try:
                    await client.publish_checked(ack_topic, json.dumps(ack).encode(), qos=1, properties=properties)
                except BrokerRefused as exc:
                    # The station republishes; the next ack may pass (an ACL fixed). Counted, said once.
                    if not self.refused_acks:
                        log.error("bridge: an ack was refused: %s", exc)
                    self.refused_acks += 1

        messages = client.messages
        async for first in messages:
            # Take what has already arrived as one batch: one SQLite transaction, acks sent together.
            batch = [first]
            while len(messages) and len(batch) < 500:
                batch.append(await anext(messages))
            acks = self.handle([(str(m.topic), bytes(m.payload), _response_topic(m)) for m in batch])
            await asyncio.gather(*(send(t, a) for t, a in acks))


def _response_topic(message: aiomqtt.Message) -> str | None:
    where = getattr(message.properties, "ResponseTopic", None)
    return where if isinstance(where, str) else None
