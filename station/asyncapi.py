"""Generates the published contract from station/messages.py: JSON Schemas and an AsyncAPI 3.0 document.

    python -m station.asyncapi docs        # writes docs/schemas/*.schema.json and docs/asyncapi.yaml

tests/station/test_contract.py fails when the committed files differ from what this generates.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

from station.messages import CHANNELS, CONTRACT_VERSION, ROOT, Channel

__all__ = ["SHARED_GROUP", "asyncapi_document", "json_schema", "render", "write"]

SCHEMA_BASE = "https://reflash-station.invalid/schemas/"


def json_schema(channel: Channel) -> dict[str, Any]:
    schema = channel.model.model_json_schema(by_alias=True, mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA_BASE}{channel.name}.schema.json",
        **schema,
    }


def _parameters(address: str) -> dict[str, Any]:
    names = [part[1:-1] for part in address.split("/") if part.startswith("{")]
    described = {
        "region": "CSP region: North, Central or South",
        "station": "The station's ID (config [station] id)",
        "order_ref": "The order reference, percent-encoded (RFC 3986) outside A-Z a-z 0-9 . _ - ~",
        "slot": "The slot name (config [[slots]] name)",
        "bridge": "The DSP bridge's name (`reflash sim dsp-bridge --name`)",
    }
    return {name: {"description": described[name]} for name in names}


_MQTT = "0.2.0"  # the AsyncAPI MQTT bindings version
_ACKED = ("result", "checkpoint")  # what the bridge acknowledges, on the response topic with the correlation data
SHARED_GROUP = "dsp-bridge"
_SERVERS = {
    "site": {
        "host": "broker.site.example:8883",
        "protocol": "mqtts",
        "protocolVersion": "5",
        "description": "The site's Mosquitto (config/mosquitto.conf): TLS with a client certificate, a password per "
        "station and per bridge, and config/mosquitto.acl binding each station to its region and topics.",
        "security": [{"$ref": "#/components/securitySchemes/clientCertificate"},
                     {"$ref": "#/components/securitySchemes/password"}],
        "bindings": {
            "mqtt": {
                "clientId": "reflash-station-{station} (the daemon); reflash-{station}-cli-{pid} (one-shot commands)",
                "cleanSession": False,
                "sessionExpiryInterval": 14 * 24 * 3600,
                "keepAlive": 60,
                "lastWill": {"topic": f"{ROOT}/{{region}}/{{station}}/status", "qos": 1, "retain": True,
                             "message": "StationStatus, state offline, at null"},
                "maximumPacketSize": 65536,
                "bindingVersion": _MQTT,
            }
        },
    },
    "local": {
        "host": "127.0.0.1:1883",
        "protocol": "mqtt",
        "protocolVersion": "5",
        "description": "Loopback listener on the broker host, for the station's own tools (no TLS).",
        "security": [{"$ref": "#/components/securitySchemes/password"}],
    },
}  # fmt: skip
_SECURITY = {
    "clientCertificate": {"type": "X509", "description": "A client certificate issued by the site CA ([mqtt] cert)."},
    "password": {
        "type": "userPassword",
        "description": "Username: the station ID (or the bridge's or dashboard's account); the password from "
        "$REFLASH_MQTT_PASSWORD or [mqtt] password_file.",
    },
}


def _message(channel: Channel) -> dict[str, Any]:
    name = channel.model.__name__
    bindings: dict[str, Any] = {"contentType": "application/json", "payloadFormatIndicator": 1}
    message: dict[str, Any] = {
        "name": name,
        "contentType": "application/json",
        "summary": (channel.model.__doc__ or "").strip().splitlines()[0],
        "payload": {"$ref": f"schemas/{channel.name}.schema.json"},
    }
    if channel.name in _ACKED:
        bindings["responseTopic"] = f"{ROOT}/{{region}}/{{station}}/ack"
        bindings["correlationData"] = {"type": "string", "format": "uuid", "description": "the message_id"}
        message["correlationId"] = {"location": "$message.payload#/message_id",
                                    "description": "MQTT v5 correlation data carries the same message_id"}  # fmt: skip
    if channel.name == "ack":
        message["correlationId"] = {"location": "$message.payload#/message_id"}
    message["bindings"] = {"mqtt": {**bindings, "bindingVersion": _MQTT}}
    return message


def asyncapi_document() -> dict[str, Any]:
    """The station's side of the contract: what it sends and what it receives, as AsyncAPI 3.0."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for channel in CHANNELS:
        message_name = channel.model.__name__
        messages[message_name] = _message(channel)
        channels[channel.name] = {
            "address": f"{ROOT}/{channel.address}",
            "description": channel.description,
            "parameters": _parameters(channel.address),
            "messages": {message_name: {"$ref": f"#/components/messages/{message_name}"}},
        }
        station_sends = channel.publisher == "station"
        binding: dict[str, Any] = {"qos": channel.qos, "retain": channel.retain}
        if channel.expiry_s is not None:
            binding["messageExpiryInterval"] = channel.expiry_s
        operation: dict[str, Any] = {
            "action": "send" if station_sends else "receive",
            "channel": {"$ref": f"#/channels/{channel.name}"},
            "summary": f"Published by the {channel.publisher}, QoS {channel.qos}"
            + (", retained" if channel.retain else ""),
            "bindings": {"mqtt": {**binding, "bindingVersion": _MQTT}},
        }
        if channel.name in _ACKED:
            operation["reply"] = {"channel": {"$ref": "#/channels/ack"}}
            shared = f"{ROOT}/+/+/{channel.name}"
            operation["description"] = (
                f"DSP bridges subscribe as `$share/{SHARED_GROUP}/{shared}` at QoS 1 with a persistent "
                "session: each message goes to one bridge of the group (docs/mqtt-api.md, The bridge)."
            )
            operation["x-shared-subscription"] = {"group": SHARED_GROUP, "filter": shared, "qos": 1}
        operations[f"{'publish' if station_sends else 'receive'}_{channel.name}"] = operation
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Re-flash station to DSP update bridge",
            "version": CONTRACT_VERSION,
            "description": "Hub results, station status, order summaries, DSP acknowledgements, bridge presence, "
            "audit checkpoints and station heartbeats over MQTT v5. Generated from station/messages.py; see "
            "docs/mqtt-api.md. Software version " + version("reflash-station") + ".",
        },
        "defaultContentType": "application/json",
        "servers": _SERVERS,
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "securitySchemes": _SECURITY},
    }


def render() -> dict[str, str]:
    """Every generated file, by path relative to docs/."""
    files = {
        f"schemas/{channel.name}.schema.json": json.dumps(json_schema(channel), indent=2) + "\n" for channel in CHANNELS
    }
    header = "# Generated by `python -m station.asyncapi docs` from station/messages.py. Do not edit.\n"
    files["asyncapi.yaml"] = header + yaml.safe_dump(asyncapi_document(), sort_keys=False, width=120)
    return files


def write(docs: Path) -> list[Path]:
    written = []
    for relative, text in render().items():
        path = docs / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")):
        print(path)
