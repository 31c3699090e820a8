r"""Messages checked against the published JSON Schemas (docs/schemas), the files a DSP integrates against.

Each message names its type and version in its `schema` field. A checker knows every version of one type that this
software accepts (docs/mqtt-api.md, "Versions": 1.0, 1.1 and 1.2) and validates a message against the schema of the
version it names, with format checks (a `uuid` must have its hyphens). The current version's schema is the committed
file, which tests/station/test_contract.py keeps equal to the models; 1.0's and 1.1's are frozen in
docs/schemas/1.0/ and docs/schemas/1.1/. A type new in 1.2 has no older schema; a type 1.2 left unchanged names
1.1 still, and its current file and its frozen 1.1 file are the same schema.

Two validators read each schema file. fastjsonschema (the schema compiled to Python code once) decides every
message and is the one on the hot path: a valid result costs about 15 microseconds instead of about 0.2 ms. The
python-jsonschema validator runs only on a message fastjsonschema refuses, to word the reason (its `best_match`, the
text a rejected ack has always carried). tests/station/test_schema_check.py runs both over valid, mutated and hostile
messages: fastjsonschema never accepts what python-jsonschema refuses, and they differ only in the case below. Both use
Python's `re` for `pattern` (so `\s` and `\d` mean the same to both), and formats are checked by the reference's own
format functions in both (`date-time` by rfc3339-validator, `uuid` with its hyphens), so a format is enforced the
same way whichever validator looks. fastjsonschema fills in defaults unless told not to: it is told not to, since a
checker must not change the message it checks.

jsonschema-rs, faster still, was measured and not taken: its regular expressions are not Python's (`\s` does not
match U+001C..U+001F or U+0085, `\d` matches ASCII digits only), so it accepts names the reference refuses.

Where the two differ, the standard's verdict stands: a string that matches a `^...$` pattern but for one trailing
newline (`"121D\n"`) is refused. Python's `$` matches before a final newline, so python-jsonschema accepted it;
JSON Schema's patterns are ECMA-262, whose `$` is the end of the string, as fastjsonschema reads it. The contract is
the schema, and a DSP checking with any conforming validator refuses such a message; no station of ours sends one
(its models' patterns are not Python's `re`). The refusal's words are then fastjsonschema's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema
from jsonschema import Draft202012Validator

__all__ = ["SCHEMAS", "PayloadChecker", "SchemaFile"]

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
_FORMAT_CHECKER = Draft202012Validator.FORMAT_CHECKER
# The reference's format functions, for fastjsonschema to call: one definition of each format.
_FORMATS: dict[str, Callable[[str], bool]] = {
    name: partial(_FORMAT_CHECKER.conforms, format=name) for name in _FORMAT_CHECKER.checkers
}


class SchemaFile:
    """One committed schema, compiled for both validators. `problem(data)` is None when it is valid, else one line
    saying what is wrong (where, then what)."""

    def __init__(self, path: Path) -> None:
        schema = json.loads(path.read_text())
        self.path = path
        self.fast = fastjsonschema.compile(schema, formats=_FORMATS, use_default=False)
        self.reference = Draft202012Validator(schema, format_checker=_FORMAT_CHECKER)
        self.names = str(schema["properties"]["schema"]["const"])  # the `schema` value its messages name

    def fast_accepts(self, data: Any) -> bool:
        try:
            self.fast(data)
        except fastjsonschema.JsonSchemaValueException:
            return False
        return True

    def problem(self, data: Any) -> str | None:
        try:
            self.fast(data)
        except fastjsonschema.JsonSchemaValueException as exc:
            # The reference words the reason; where it accepts (a trailing newline), the standard's verdict stands.
            return self.reference_problem(data) or _fast_words(exc)
        return None

    def reference_problem(self, data: Any) -> str | None:
        """The reference's verdict and words alone: what every message cost before fastjsonschema came."""
        error = jsonschema.exceptions.best_match(self.reference.iter_errors(data))
        if error is None:
            return None
        where = "/".join(str(part) for part in error.absolute_path) or "(message)"
        return f"{where}: {error.message}"


def _fast_words(exc: fastjsonschema.JsonSchemaValueException) -> str:
    where = "/".join(str(part) for part in (exc.path or [])[1:]) or "(message)"  # path[0] is fastjsonschema's "data"
    return f"{where}: {exc.value!r} {exc.message.split(' ', 1)[-1]} (a pattern's $ is the end of the string)"


@cache
def _schema_file(path: Path) -> SchemaFile:
    return SchemaFile(path)


class PayloadChecker:
    """`problem(data)` is None for a valid message of an accepted version, else one line saying what is wrong."""

    def __init__(self, channel: str, folder: Path = SCHEMAS) -> None:
        name = _NAMES[channel]
        self.versions = {
            f"{name}/{minor}": _schema_file(folder / frozen / f"{channel}.schema.json")
            for frozen, minor in _FROZEN.items()
            if (folder / frozen / f"{channel}.schema.json").exists()
        }
        current = _schema_file(folder / f"{channel}.schema.json")
        self.versions[current.names] = current

    def problem(self, data: Any) -> str | None:
        if not isinstance(data, dict):
            return "(message): not a JSON object"
        name = data.get("schema")
        # Only a string names a version: a list or an object there is refused, not looked up (it is unhashable).
        schema = self.versions.get(name) if isinstance(name, str) else None
        if schema is None:
            return f"schema: {data.get('schema')!r} is not one of {sorted(self.versions)}"
        return schema.problem(data)
