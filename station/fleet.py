"""The fleet view: every station a broker knows, as plain data. Read from the retained messages the stations leave
at the broker (StationStatus: presence; StationHeartbeat, contract 1.2: slots busy, hubs done today by outcome,
outbox backlog, catalog serial), so that it needs no station's store and works for a dashboard account that may only
read. `reflash fleet status` prints it; the fleet page shows the same model.

Collected without guessing how long to wait: the retained messages of a subscription are sent right after its
SUBACK, so once a second SUBSCRIBE (that asks for no retained messages) has its SUBACK, every retained message of
the first has arrived before it. Subscribed at QoS 0, so that no in-flight window holds any back.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from station.messages import ROOT, StationHeartbeat, StationStatus

__all__ = ["FleetError", "FleetStation", "FleetView", "client_settings", "collect", "fleet_view"]

STATUS = f"{ROOT}/+/+/status"
HEARTBEAT = f"{ROOT}/+/+/heartbeat"


class FleetError(Exception):
    """The broker cannot be read: the message names it and why."""


class FleetStation(BaseModel):
    """One station as the broker last heard of it."""

    model_config = ConfigDict(frozen=True)

    station: str
    region: str
    state: Literal["online", "offline", "unknown"] = Field(description="unknown: a heartbeat but no status seen")
    session: int | None
    last_seen: AwareDatetime | None = Field(description="The newest `at` of its status and heartbeat")
    software_version: str | None
    slots: int | None
    slots_busy: int | None = Field(description="null: no heartbeat (a 1.1 station, or one never connected since)")
    hubs_today: dict[str, int] = Field(description="Hubs finished today (UTC, the view's day), by outcome")
    outbox_backlog: int | None
    anchors_waiting: int | None
    catalog_serial: int | None
    catalog_outdated: bool = Field(description="Its catalog is older than the newest any station runs")


class FleetView(BaseModel):
    """Every station a broker knows."""

    model_config = ConfigDict(frozen=True)

    at: AwareDatetime
    day: date = Field(description="The UTC day `hubs_today` counts")
    newest_catalog_serial: int | None
    stations: list[FleetStation]
    unreadable: list[str] = Field(description="Topics whose retained message this version cannot read")


def fleet_view(
    statuses: Iterable[StationStatus],
    heartbeats: Iterable[StationHeartbeat],
    *,
    at: datetime,
    unreadable: Iterable[str] = (),
) -> FleetView:
    """The view of these retained messages at `at`: one row per station, by region and name."""
    status = {(s.region, s.station): s for s in statuses}
    beat = {(h.region, h.station): h for h in heartbeats}
    today = at.astimezone(UTC).date()
    rows: list[dict[str, Any]] = []
    for key in sorted(status.keys() | beat.keys()):
        s, h = status.get(key), beat.get(key)
        seen = [moment for moment in (s.at if s else None, h.at if h else None) if moment is not None]
        rows.append(
            {
                "station": key[1],
                "region": key[0],
                "state": s.state if s else "unknown",
                "session": s.session if s else h.session if h else None,
                "last_seen": max(seen) if seen else None,
                "software_version": s.software_version if s else None,
                "slots": h.slots if h else s.slots if s else None,
                "slots_busy": h.slots_busy if h else None,
                # A heartbeat of another day says nothing of today.
                "hubs_today": {str(k): v for k, v in h.hubs_today.items()} if h and h.day == today else {},
                "outbox_backlog": h.outbox_backlog if h else None,
                "anchors_waiting": h.anchors_waiting if h else None,
                "catalog_serial": _catalog_serial(s, h),
            }
        )
    serials = [row["catalog_serial"] for row in rows if row["catalog_serial"] is not None]
    newest = max(serials, default=None)
    stations = [
        FleetStation(**row, catalog_outdated=row["catalog_serial"] is not None and row["catalog_serial"] != newest)
        for row in rows
    ]
    return FleetView(at=at, day=today, newest_catalog_serial=newest, stations=stations, unreadable=sorted(unreadable))


def _catalog_serial(status: StationStatus | None, heartbeat: StationHeartbeat | None) -> int | None:
    """The heartbeat's serial follows a reload (SIGHUP); the birth's is the one the station connected with."""
    if heartbeat is not None and heartbeat.catalog_serial is not None:
        return heartbeat.catalog_serial
    return status.catalog_serial if status is not None else None


def client_settings(
    broker: str,
    *,
    username: str | None,
    ca: str | None,
    password_env: str = "REFLASH_MQTT_PASSWORD",  # noqa: S107 -- the name of a variable, not a password
) -> dict[str, Any]:
    """aiomqtt.Client keyword arguments for a broker URL: mqtt:// or mqtts:// (TLS, with `ca` or the system's CAs);
    the password from the environment variable `password_env` ($REFLASH_MQTT_PASSWORD, as the station's default)."""
    parts = urlsplit(broker)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise FleetError(f"--broker must be mqtt://host:port or mqtts://host:port, got {broker!r}")
    tls = parts.scheme == "mqtts"
    if ca is not None and not tls:
        raise FleetError(f"--ca {ca}: a CA certificate is for an mqtts:// broker, not {broker}")
    settings: dict[str, Any] = {
        "hostname": parts.hostname,
        "port": parts.port or (8883 if tls else 1883),
        "username": username or parts.username,
        "password": os.environ.get(password_env) or parts.password,
    }
    if tls:
        try:
            settings["tls_context"] = ssl.create_default_context(cafile=ca)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise FleetError(f"--ca {ca}: {getattr(exc, 'strerror', None) or exc}") from None
    return settings


async def collect(broker: str, settings: dict[str, Any], *, timeout_s: float = 10.0) -> FleetView:
    """Every retained station status and heartbeat at the broker, as a view."""
    statuses: list[StationStatus] = []
    heartbeats: list[StationHeartbeat] = []
    unreadable: list[str] = []
    client = aiomqtt.Client(**settings, identifier=f"reflash-fleet-{os.getpid()}",
                            protocol=aiomqtt.ProtocolVersion.V5, timeout=timeout_s)  # fmt: skip
    try:
        async with asyncio.timeout(timeout_s):
            async with client:
                for where in (STATUS, HEARTBEAT):
                    await client.subscribe(where, options=SubscribeOptions(qos=0))
                # The barrier: this SUBACK comes after every retained message of the subscriptions above.
                await client.subscribe(HEARTBEAT, options=SubscribeOptions(qos=0, retainHandling=2))
                messages = client.messages
                while len(messages):
                    message = await anext(messages)
                    name = str(message.topic)
                    model = StationHeartbeat if message.topic.matches(HEARTBEAT) else StationStatus
                    try:
                        parsed = model.model_validate_json(bytes(message.payload))
                    except ValidationError:
                        unreadable.append(name)
                        continue
                    if isinstance(parsed, StationHeartbeat):
                        heartbeats.append(parsed)
                    else:
                        statuses.append(parsed)
    except TimeoutError:
        raise FleetError(f"{broker}: no answer within {timeout_s:g} s") from None
    except aiomqtt.MqttError as exc:
        raise FleetError(f"{broker}: {exc}") from None
    return fleet_view(statuses, heartbeats, at=datetime.now(UTC), unreadable=unreadable)
