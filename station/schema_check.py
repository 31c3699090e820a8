"""Messages checked against the published JSON Schemas (docs/schemas), the files a DSP integrates against.

Each message names its type and version in its `schema` field. A checker knows every version of one type that this
software accepts (docs/mqtt-api.md, "Versions": 1.0 and 1.1) and validates a message against the schema of the
version it names, with format checks (a `uuid` must have its hyphens). The current version's schema is the committed
file, which tests/station/test_contract.py keeps equal to the models; 1.0's are frozen in docs/schemas/1.0/.
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
}


@cache
def _validator(path: Path) -> Draft202012Validator:
    return Draft202012Validator(json.loads(path.read_text()), format_checker=Draft202012Validator.FORMAT_CHECKER)


class PayloadChecker:
    """`problem(data)` is None for a valid message of an accepted version, else one line saying what is wrong."""

    def __init__(self, channel: str, folder: Path = SCHEMAS) -> None:
        name = _NAMES[channel]
        self.versions = {
            f"{name}/1": _validator(folder / "1.0" / f"{channel}.schema.json"),
            f"{name}/1.1": _validator(folder / f"{channel}.schema.json"),
        }

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
