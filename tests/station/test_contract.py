"""The published MQTT contract is what the models say: generated files are current, the doc's topic table is true."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator, Draft202012Validator

from station.asyncapi import render
from station.messages import CHANNELS, ROOT

DOCS = Path(__file__).parents[2] / "docs"
# The official AsyncAPI JSON Schemas (npm @asyncapi/specs, version pinned in tools/asyncapi/package.json and its
# lock file; `make contract-tools` installs them, and `make test` depends on it).
OFFICIAL = Path(__file__).parents[2] / "tools/asyncapi/node_modules/@asyncapi/specs/schemas/3.0.0.json"


def test_generated_contract_files_are_committed_and_current() -> None:
    for relative, text in render().items():
        path = DOCS / relative
        assert path.exists(), f"{path} is missing: run `python -m station.asyncapi docs`"
        assert path.read_text() == text, f"{path} is stale: run `python -m station.asyncapi docs`"


def test_schemas_are_valid_json_schema_and_asyncapi_refers_to_them() -> None:
    document = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())
    assert document["asyncapi"] == "3.0.0"
    for channel in CHANNELS:
        schema = json.loads((DOCS / f"schemas/{channel.name}.schema.json").read_text())
        Draft202012Validator.check_schema(schema)
        assert set(schema["properties"]) == {field.alias or name for name, field in channel.model.model_fields.items()}
        declared = document["channels"][channel.name]
        assert declared["address"] == f"{ROOT}/{channel.address}"
        message = document["components"]["messages"][channel.model.__name__]
        assert message["payload"] == {"$ref": f"schemas/{channel.name}.schema.json"}
        # MQTT allows qos and retain only in operation bindings (AsyncAPI MQTT bindings 0.2.0).
        operation = next(op for op in document["operations"].values() if op["channel"]["$ref"].endswith(channel.name))
        assert operation["bindings"]["mqtt"]["qos"] == channel.qos
        assert operation["bindings"]["mqtt"]["retain"] == channel.retain
        assert "qos" not in message["bindings"]["mqtt"]
        assert "retain" not in message["bindings"]["mqtt"]
        assert message["bindings"]["mqtt"]["contentType"] == "application/json"


def test_topic_table_in_mqtt_api_doc_matches_channels() -> None:
    lines = (DOCS / "mqtt-api.md").read_text().splitlines()
    start = lines.index("| topic | payload | QoS | retained | published by | what |")
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    assert [(r[0].strip("`"), r[1], int(r[2]), r[3] == "yes", r[4]) for r in rows] == [
        (f"{ROOT}/{c.address}", c.model.__name__, c.qos, c.retain, c.publisher) for c in CHANNELS
    ]


def test_asyncapi_document_passes_the_official_asyncapi_3_schema() -> None:
    if not OFFICIAL.exists():
        pytest.fail(f"{OFFICIAL} is missing: run `make contract-tools` (npm ci in tools/asyncapi)")
    official = json.loads(OFFICIAL.read_text())
    document = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())
    problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in
                Draft7Validator(official).iter_errors(document)]  # fmt: skip
    assert problems == []
    # What a DSP needs from it: where to connect and how, and the bridges' shared-subscription group.
    assert document["servers"]["site"]["protocol"] == "mqtts"
    assert document["servers"]["site"]["security"]
    assert set(document["components"]["securitySchemes"]) == {"clientCertificate", "password"}
    results = document["operations"]["publish_result"]
    assert results["x-shared-subscription"]["group"] == "dsp-bridge"
    assert results["reply"] == {"channel": {"$ref": "#/channels/ack"}}


def test_the_official_schema_would_catch_the_1_0_mistake() -> None:
    """The check has teeth: qos in a message binding (as 1.0's document had it) fails the official schema."""
    if not OFFICIAL.exists():
        pytest.fail(f"{OFFICIAL} is missing: run `make contract-tools`")
    document = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())
    document["components"]["messages"]["HubResult"]["bindings"]["mqtt"]["qos"] = 1
    assert list(Draft7Validator(json.loads(OFFICIAL.read_text())).iter_errors(document))
