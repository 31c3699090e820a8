"""Messages checked against the published JSON Schemas (docs/schemas), the files a DSP integrates against.

Each message names its type and version in its `schema` field. A checker knows every version of one type that this
software accepts (docs/mqtt-api.md, "Versions": 1.0, 1.1 and 1.2) and validates a message against the schema of the
version it names, with format checks (a `uuid` must have its hyphens). The current version's schema is the committed
file, which tests/station/test_contract.py keeps equal to the models; 1.0's and 1.1's are frozen in
docs/schemas/1.0/ and docs/schemas/1.1/. A type new in 1.2 has no older schema; a type 1.2 left unchanged names
1.1 still, and its current file and its frozen 1.1 file are the same schema.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

__all__ = ["SCHEMAS", "PayloadChecker"]

SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "schemas"
# channel file name -> the `schema` value of each version
_NAMES = {
    "ack": "reflash.dsp-ack",
    "result": "reflash.hub-result",
    "status": "reflash.station-status",
    "order": "reflash.order-summary",
    "slot": "reflash.slot-progress",
    "checkpoint": "reflash.audit-checkpoint",
    "heartbeat": "reflash.station-heartbeat",
}
# frozen folder -> the minor as a `schema` value writes it (1.0 wrote none)
_FROZEN = {"1.0": "1", "1.1": "1.1"}


@cache
def _validator(path: Path) -> Draft202012Validator:
    return Draft202012Validator(json.loads(path.read_text()), format_checker=Draft202012Validator.FORMAT_CHECKER)


def _names(validator: Draft202012Validator) -> str:
    """The `schema` value a schema file requires: the version its messages name."""
    schema: dict[str, Any] = validator.schema  # type: ignore[assignment]
    return str(schema["properties"]["schema"]["const"])


class PayloadChecker:
    """`problem(data)` is None for a valid message of an accepted version, else one line saying what is wrong."""

    def __init__(self, channel: str, folder: Path = SCHEMAS) -> None:
        name = _NAMES[channel]
        self.versions = {
            f"{name}/{minor}": _validator(folder / frozen / f"{channel}.schema.json")
            for frozen, minor in _FROZEN.items()
            if (folder / frozen / f"{channel}.schema.json").exists()
        }
        current = _validator(folder / f"{channel}.schema.json")
        self.versions[_names(current)] = current

    def problem(self, data: Any) -> str | None:
        if not isinstance(data, dict):
            return "(message): not a JSON object"
        validator = self.versions.get(data.get("schema"))  # type: ignore[arg-type]
        if validator is None:
            return f"schema: {data.get('schema')!r} is not one of {sorted(self.versions)}"
        error = jsonschema.exceptions.best_match(validator.iter_errors(data))
        if error is None:
            return None
        where = "/".join(str(part) for part in error.absolute_path) or "(message)"
        return f"{where}: {error.message}"
