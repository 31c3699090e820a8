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

Contract 1.2: it also takes each station's signed audit checkpoints (`.../checkpoint`, the same shared group) and
keeps them as anchors: every one that passes its schema is stored once per message_id and acked like a result, and
none is ever replaced, so that a station that rewrites its history and signs it again leaves the old anchors
standing beside the new. The bridge does not check their signatures: it need not know every station's key, and
stores what arrives; `reflash audit verify --anchors` checks them with the station's key. `anchors_document` is
what it exports (`--anchors-out FILE`) and serves over HTTP (`--anchors-listen HOST:PORT`, GET /anchors).
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
from urllib.parse import parse_qsl, urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from station.anchors import ANCHORS_FORMAT
from station.broker_client import (
    BrokerClient,
    BrokerRefused,
    Outgoing,
    publish_properties,
    raise_for_suback,
    with_correlation,
)
from station.schema_check import SCHEMAS, PayloadChecker

__all__ = ["ANCHORS_FORMAT", "SCHEMAS", "AnchorServer", "DspBridge", "SmiStore", "SmiStoreError", "anchors_document"]

log = logging.getLogger(__name__)
RESULTS = "reflash/v1/+/+/result"
CHECKPOINTS = "reflash/v1/+/+/checkpoint"
STATE = "reflash/v1/STATE"
ACKS_IN_FLIGHT = 100


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _instant(at: str) -> str:
    """A date-time as text that sorts as time does: UTC, microseconds always written. The contract allows any offset
    and any precision (`10:00:01.5+01:00`, `09:00:01Z`), whose texts do not compare as their instants do."""
    return datetime.fromisoformat(at).astimezone(UTC).isoformat(timespec="microseconds")


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
            CREATE TABLE IF NOT EXISTS anchors (
                message_id TEXT PRIMARY KEY,
                station TEXT NOT NULL,
                region TEXT NOT NULL,
                seq INTEGER NOT NULL,
                hash TEXT NOT NULL,
                at TEXT NOT NULL,
                key_fingerprint TEXT NOT NULL,
                signature TEXT NOT NULL,
                payload TEXT NOT NULL,
                received_at TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS anchors_by_station ON anchors (station, seq);
            CREATE TRIGGER IF NOT EXISTS anchors_kept BEFORE UPDATE ON anchors
                BEGIN SELECT RAISE(ABORT, 'anchors are never changed'); END;
            CREATE TRIGGER IF NOT EXISTS anchors_never_removed BEFORE DELETE ON anchors
                BEGIN SELECT RAISE(ABORT, 'anchors are never removed'); END;
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
                         _instant(result["finished_at"])),
                    )  # fmt: skip
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return outcomes

    def keep_anchors(self, checkpoints: list[dict[str, Any]]) -> list[str]:
        """Store valid audit checkpoints in one transaction, never replacing one; for each, `applied` (stored now)
        or `duplicate` (its message_id was stored before)."""
        now = _now()
        outcomes: list[str] = []
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for c in checkpoints:
                inserted = self._db.execute(
                    "INSERT OR IGNORE INTO anchors (message_id, station, region, seq, hash, at, key_fingerprint, "
                    "signature, payload, received_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (c["message_id"], c["station"], c["region"], c["seq"], c["hash"], c["at"], c["key_fingerprint"],
                     c["signature"], json.dumps(c, sort_keys=True), now),
                ).rowcount  # fmt: skip
                outcomes.append("applied" if inserted else "duplicate")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return outcomes

    def anchors(self, station: str | None = None) -> list[dict[str, Any]]:
        """The anchors held, as the stations sent them, each with `received_at`; by station, then sequence."""
        if station is None:
            rows = self._db.execute("SELECT payload, received_at FROM anchors ORDER BY station, seq, received_at")
        else:
            rows = self._db.execute(
                "SELECT payload, received_at FROM anchors WHERE station = ? ORDER BY seq, received_at", (station,)
            )
        return [{**json.loads(row["payload"]), "received_at": row["received_at"]} for row in rows]

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
        self.anchor_checker = PayloadChecker("checkpoint")
        self.subscribed = asyncio.Event()
        self.refused_acks = 0
        self._stopping = asyncio.Event()

    def handle(
        self, messages: list[tuple[str, bytes]] | list[tuple[str, bytes, str | None]]
    ) -> list[tuple[str, dict[str, Any]]]:
        """Validate and apply a batch of (topic, payload[, response topic]); return the (topic, ack) pairs to send.
        A message without a readable message_id cannot be acked: it is kept in `rejected` and logged."""
        valid: list[tuple[str, dict[str, Any]]] = []
        anchors: list[tuple[str, dict[str, Any]]] = []
        acks: list[tuple[str, dict[str, Any]]] = []
        for topic, payload, *respond in messages:
            is_anchor = topic.endswith("/checkpoint")
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
                problem = (self.anchor_checker if is_anchor else self.checker).problem(data)
                if problem is None:
                    (anchors if is_anchor else valid).append((ack_topic, data))
                    continue
                reason = problem
            self.smi.reject(message_id, topic, payload, reason)
            log.warning("rejected a %s on %s: %s", "checkpoint" if is_anchor else "result", topic, reason)
            if message_id is not None:
                acks.append((ack_topic, self._ack(message_id, "rejected", reason)))
        outcomes = self.smi.apply([data for _, data in valid])
        acks += [(t, self._ack(data["message_id"], o, None)) for (t, data), o in zip(valid, outcomes, strict=True)]
        kept = self.smi.keep_anchors([data for _, data in anchors]) if anchors else []
        acks += [(t, self._ack(data["message_id"], o, None)) for (t, data), o in zip(anchors, kept, strict=True)]
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
                    for where in (RESULTS, CHECKPOINTS):
                        shared = f"$share/{self.group}/{where}"
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
        template = publish_properties()
        messages = client.messages
        async for first in messages:
            # Take what has already arrived as one batch: one SQLite transaction, acks sent together.
            batch = [first]
            while len(messages) and len(batch) < 500:
                batch.append(await anext(messages))
            acks = self.handle([(str(m.topic), bytes(m.payload), _response_topic(m)) for m in batch])
            outgoing = [
                Outgoing(
                    ack_topic, json.dumps(ack).encode(), False, with_correlation(template, ack["message_id"].encode())
                )
                for ack_topic, ack in acks
            ]
            for outcome in await client.publish_window(outgoing, ACKS_IN_FLIGHT):
                if isinstance(outcome, BrokerRefused):
                    # The station republishes; the next ack may pass (an ACL fixed). Counted, said once.
                    if not self.refused_acks:
                        log.error("bridge: an ack was refused: %s", outcome)
                    self.refused_acks += 1
                elif outcome is not None:
                    raise outcome


def _response_topic(message: aiomqtt.Message) -> str | None:
    where = getattr(message.properties, "ResponseTopic", None)
    return where if isinstance(where, str) else None


def anchors_document(anchors: list[dict[str, Any]], bridge: str) -> dict[str, Any]:
    """What the bridge exports and serves: the anchors it holds, for `reflash audit verify --anchors`."""
    return {"format": ANCHORS_FORMAT, "bridge": bridge, "exported_at": _now(), "anchors": anchors}


class AnchorServer:
    """The anchors over HTTP, read-only: `GET /anchors` (all) or `GET /anchors?station=ID`, as `anchors_document`.
    A plain HTTP/1.1 responder on asyncio streams, one request per connection: enough for a simulator, and no more
    (a DSP's real service would sit behind its own web stack and authentication)."""

    def __init__(self, smi: SmiStore, bridge: str) -> None:
        self.smi = smi
        self.bridge = bridge

    async def serve(self, host: str, port: int, ready: asyncio.Future[int] | None = None) -> None:
        """Serve until cancelled; `ready` gets the port bound (port 0 picks a free one)."""
        server = await asyncio.start_server(self._answer, host, port)
        async with server:
            if ready is not None:
                ready.set_result(server.sockets[0].getsockname()[1])
            await server.serve_forever()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = (await reader.readline()).decode("latin-1").split()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # headers: nothing in them changes the answer
            method, target = (request[0], request[1]) if len(request) >= 2 else ("", "")
            parts = urlsplit(target)
            station = dict(parse_qsl(parts.query)).get("station")
            if method != "GET" or parts.path != "/anchors":
                status, body = "404 Not Found", json.dumps({"error": "GET /anchors[?station=ID]"})
            else:
                status, body = "200 OK", json.dumps(anchors_document(self.smi.anchors(station), self.bridge))
            data = body.encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
