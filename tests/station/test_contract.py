"""The published MQTT contract is what the models say: generated files are current, the doc's topic table is true."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator

from station.asyncapi import render
from station.messages import CHANNELS, ROOT

DOCS = Path(__file__).parents[2] / "docs"


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
        assert message["bindings"]["mqtt"]["qos"] == channel.qos
        assert message["bindings"]["mqtt"]["retain"] == channel.retain


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
