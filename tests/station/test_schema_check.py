"""The fast validator (fastjsonschema) against the reference (python-jsonschema) on the committed schemas: valid
messages, hostile hand-written ones and hypothesis mutations of valid ones. fastjsonschema must never accept what the
reference refuses, and the two disagree only where the module docstring says (a string that ends in a newline,
which the standard refuses and so does the checker)."""

from __future__ import annotations

import copy
import json
import math
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from station.schema_check import SCHEMAS, PayloadChecker, SchemaFile

MESSAGE_ID = "302850c9-08ee-40e7-8b5b-27d05c66f480"
AT = "2026-12-06T10:00:00.000Z"

_RESULT: dict[str, Any] = {
    "schema": "reflash.hub-result/1.1", "message_id": MESSAGE_ID, "sequence": 7, "station": "st-north-01",
    "region": "North", "order_ref": "ORD-1", "requesting_party": "DCC-USER-1", "chf_id": "00-DB-12-34-56-78-90-A0",
    "gpf_id": "00-DB-12-34-56-78-90-A1", "manufacturer": "121D", "model": "0000", "hardware_version": "1200",
    "firmware_before": "01000000", "firmware_after": "01020000", "image_sha256": "ab" * 32, "outcome": "REFLASHED",
    "reason": "REFLASHED", "attempts": 1, "started_at": AT, "finished_at": "2026-12-06T10:00:01+01:00",
    "operator": "op-1", "facility": "SSC-1", "audit_hash": "cd" * 32,
}  # fmt: skip
_ACK: dict[str, Any] = {
    "schema": "reflash.dsp-ack/1.1", "message_id": MESSAGE_ID, "result": "rejected", "reason": "why",
    "bridge": "dsp-bridge-1", "at": AT,
}  # fmt: skip
_STATUS: dict[str, Any] = {
    "schema": "reflash.station-status/1.1", "state": "online", "station": "st-north-01", "region": "North",
    "session": 1733479200000, "at": AT, "software_version": "1.0", "facility": "SSC-1", "operator": None, "slots": 8,
    "catalog_serial": 3,
}  # fmt: skip
_ORDER: dict[str, Any] = {
    "schema": "reflash.order-summary/1.1", "message_id": MESSAGE_ID, "station": "st-north-01", "region": "South",
    "order_ref": "ORD-1", "kind": "dcc", "requesting_party": "DCC-USER-1", "closed_at": AT,
    "totals": {"named": 3, "processed": 2, "outcomes": {"REFLASHED": 2}, "charge": "15.20", "currency": "GBP"},
    "never_received": ["00-DB-12-34-56-78-90-A2"], "unasked": [],
}  # fmt: skip
_SLOT: dict[str, Any] = {
    "schema": "reflash.slot-progress/1.1", "station": "st-north-01", "slot": "A1", "state": "transferring",
    "chf_id": "00-DB-12-34-56-78-90-A0", "bytes_done": 100, "bytes_total": 1000, "bytes_per_s": 91.5, "at": AT,
}  # fmt: skip


# Contract 1.2's new types: no older version to accept.
_CHECKPOINT: dict[str, Any] = {
    "schema": "reflash.audit-checkpoint/1.2", "message_id": MESSAGE_ID, "station": "st-north-01", "region": "North",
    "seq": 42, "hash": "ab" * 32, "at": "2026-12-06T10:00:00.123Z", "key_fingerprint": "cd" * 32,
    "signature": "ef" * 64,
}  # fmt: skip
_HEARTBEAT: dict[str, Any] = {
    "schema": "reflash.station-heartbeat/1.2", "station": "st-north-01", "region": "North", "session": 1, "at": AT,
    "slots": 8, "slots_busy": 3, "day": "2026-12-06", "hubs_today": {"REFLASHED": 40, "REFUSED": 2},
    "outbox_backlog": 0, "anchors_waiting": 1, "catalog_serial": 3,
}  # fmt: skip


def _one_point_oh(message: dict[str, Any]) -> dict[str, Any]:
    """The same message in contract 1.0: its `schema` says /1, and a result has no `sequence`."""
    older = {key: value for key, value in message.items() if key != "sequence"}
    older["schema"] = message["schema"].rsplit("/", 1)[0] + "/1"
    return older


VALID: dict[str, list[dict[str, Any]]] = {
    channel: [message, _one_point_oh(message)]
    for channel, message in (
        ("result", _RESULT), ("ack", _ACK), ("status", _STATUS), ("order", _ORDER), ("slot", _SLOT),
    )
} | {"checkpoint": [_CHECKPOINT], "heartbeat": [_HEARTBEAT]}  # fmt: skip
CHECKERS = {channel: PayloadChecker(channel) for channel in VALID}


def _schema_file(channel: str, message: Any) -> SchemaFile:
    checker = CHECKERS[channel]
    name = message.get("schema") if isinstance(message, dict) else None
    # A message naming no accepted version is refused by the checker before any schema; both validators still see
    # it against the current version's schema, whose `const` refuses it.
    return (checker.versions.get(name) if isinstance(name, str) else None) or checker.versions[max(checker.versions)]


def _documented_difference(value: Any) -> bool:
    """Whether a message holds what the two validators are known to judge differently: a string ending in a
    newline."""
    if isinstance(value, str):
        return value.endswith("\n")
    if isinstance(value, dict):
        return any(_documented_difference(v) for v in value.values())
    if isinstance(value, list):
        return any(_documented_difference(v) for v in value)
    return False


def assert_same_verdict(channel: str, message: Any) -> bool:
    """The checker says what the reference says; fastjsonschema accepts only what the reference accepts, and
    refuses what it accepts only in the documented case. Returns the verdict."""
    schema = _schema_file(channel, message)
    reference = schema.reference.is_valid(message)
    fast = schema.fast_accepts(message)
    name = message.get("schema") if isinstance(message, dict) else None
    named = isinstance(name, str) and name in CHECKERS[channel].versions
    assert (CHECKERS[channel].problem(message) is None) is (fast and named), message
    assert not (fast and not reference), f"fastjsonschema accepts what the reference refuses: {message!r}"
    if fast != reference:
        assert _documented_difference(message), f"the validators disagree outside the documented case: {message!r}"
    return reference


@pytest.mark.parametrize("channel", sorted(VALID))
def test_valid_messages_of_both_versions_pass_both(channel: str) -> None:
    for message in VALID[channel]:
        schema = _schema_file(channel, message)
        assert schema.reference.is_valid(message), message
        assert schema.fast_accepts(message), message
        assert CHECKERS[channel].problem(message) is None


# Hand-written hostile values, by the kind of field they go into.
UUIDS = [
    MESSAGE_ID.upper(), MESSAGE_ID.replace("-", ""), "{" + MESSAGE_ID + "}", "urn:uuid:" + MESSAGE_ID,
    MESSAGE_ID[:30] + "-" + MESSAGE_ID[30:], MESSAGE_ID[:-1], MESSAGE_ID + "0", MESSAGE_ID + "\n", " " + MESSAGE_ID,
    "g" + MESSAGE_ID[1:], "", str(uuid.UUID(int=0)),
]  # fmt: skip
DATE_TIMES = [
    "2026-12-06t10:00:00z", "2026-12-06T23:59:60Z", "2026-12-06T10:00:60Z", "2026-02-30T10:00:00Z",
    "2024-02-29T10:00:00Z", "2026-12-06T10:00:00+0100", "2026-12-06 10:00:00Z", "2026-12-06T10:00:00.Z",
    "2026-12-06T10:00:00Z\n", "2026-12-06T10:00:00", "2026-12-06", "10:00:00Z", "2026-12-06T24:00:00Z",
    "2026-12-06T10:00:00.123456789+23:59", "2026-12-06T10:00:00-00:00", "+2026-12-06T10:00:00Z", "",
]  # fmt: skip
WRONG_TYPES: list[Any] = [None, True, False, 0, 1, -1, 1.0, 1.5, 2**64, -(2**63) - 1, math.inf, -math.inf, "7", [], {}]
# Characters where regular-expression engines differ on `\s` and `\d` (Python's `re` against ECMA-262 and Rust).
ODD_CHARACTERS = ["\x1c", "\x1f", "\x85", "\xa0", "\u2028", "\ufeff", "\u180e", "\u200b", "\u0661", "\uff11"]
NAMES = [f"A{char}1" for char in ODD_CHARACTERS]
HEXES = ["121d", "121D\n", "121DD", "12 D", "\uff11\uff12\uff11D", "\u0000121D"]


def _edge_cases() -> list[tuple[str, dict[str, Any]]]:
    cases: list[tuple[str, dict[str, Any]]] = []
    for channel, messages in VALID.items():
        for message in messages:
            for key in message:
                for value in [*WRONG_TYPES, *UUIDS, *DATE_TIMES, *HEXES, *NAMES]:
                    cases.append((channel, message | {key: value}))
                cases.append((channel, {k: v for k, v in message.items() if k != key}))
            cases.append((channel, message | {"extra": 1}))
            cases.append((channel, message | {"Schema": message["schema"]}))
            cases.append((channel, message | {"schema": message["schema"] + ".0"}))
    totals: dict[str, Any] = _ORDER["totals"]
    cases.append(("order", _ORDER | {"totals": totals | {"extra": 1}}))
    cases.append(("order", _ORDER | {"totals": totals | {"outcomes": {"REFLASHED": -1}}}))
    cases.append(("order", _ORDER | {"never_received": ["00-db-12-34-56-78-90-a2"]}))
    cases.append(("order", _ORDER | {"never_received": "00-DB-12-34-56-78-90-A2"}))
    for digits in ("\u0661\u0662.\u0663\u0664", "\uff11\uff12.\uff13\uff14", "12.3", "12.345"):
        cases.append(("order", _ORDER | {"totals": totals | {"charge": digits}}))
    return cases


def test_hand_written_edge_cases_get_the_reference_verdict() -> None:
    verdicts = [assert_same_verdict(channel, message) for channel, message in _edge_cases()]
    assert any(verdicts)
    assert not all(verdicts)


def test_formats_are_enforced_as_before() -> None:
    """uuid and date-time: the verdicts the reference gave before fastjsonschema came, for the cases that matter."""
    result = PayloadChecker("result")
    assert result.problem(_RESULT | {"message_id": MESSAGE_ID.replace("-", "")}) is not None
    assert result.problem(_RESULT | {"message_id": MESSAGE_ID.upper()}) is None
    assert result.problem(_RESULT | {"started_at": "2026-02-30T10:00:00Z"}) is not None
    assert result.problem(_RESULT | {"started_at": "2026-12-06T10:00:00"}) is not None
    assert result.problem(_RESULT | {"started_at": "2026-12-06T23:59:60Z"}) is not None  # rfc3339-validator's rule
    assert result.problem(_RESULT | {"started_at": "2026-12-06t10:00:00z"}) is None


def test_rejection_reasons_are_the_references_words() -> None:
    """What the bridge puts in a `rejected` ack (and the station logs of a refused ack): where, then what."""
    result, ack = PayloadChecker("result"), PayloadChecker("ack")
    assert result.problem(_RESULT | {"message_id": "nope"}) == "message_id: 'nope' is not a 'uuid'"
    assert result.problem(_RESULT | {"attempts": "1"}) == "attempts: '1' is not of type 'integer'"
    assert result.problem(_RESULT | {"extra": 1}) == (
        "(message): Additional properties are not allowed ('extra' was unexpected)"
    )
    assert result.problem({k: v for k, v in _RESULT.items() if k != "sequence"}) == (
        "(message): 'sequence' is a required property"
    )
    assert ack.problem(_ACK | {"at": "yesterday"}) == "at: 'yesterday' is not a 'date-time'"
    assert ack.problem(_ACK | {"schema": "reflash.dsp-ack/2"}) == (
        "schema: 'reflash.dsp-ack/2' is not one of ['reflash.dsp-ack/1', 'reflash.dsp-ack/1.1']"
    )
    # Found by the mutations: an unhashable `schema` used to raise TypeError out of the checker (and the bridge).
    assert ack.problem(_ACK | {"schema": []}) == (
        "schema: [] is not one of ['reflash.dsp-ack/1', 'reflash.dsp-ack/1.1']"
    )


@pytest.mark.parametrize(
    ("channel", "message"),
    [("result", _RESULT | {"manufacturer": "121D\n"}), ("slot", _SLOT | {"station": "st-north-01\n"})],
)
def test_the_documented_difference_takes_the_standards_verdict(channel: str, message: dict[str, Any]) -> None:
    """Python's `$` matches before a final newline; fastjsonschema reads `$` as the end of the string, as ECMA-262
    (which JSON Schema names) does. python-jsonschema accepts, fastjsonschema refuses, and the checker refuses, as a
    DSP with any conforming validator would, naming the field."""
    schema = _schema_file(channel, message)
    assert schema.reference.is_valid(message)
    assert not schema.fast_accepts(message)
    problem = CHECKERS[channel].problem(message)
    assert problem is not None
    field = "manufacturer" if channel == "result" else "station"
    assert problem.startswith(f"{field}: "), problem
    assert "\\n" in problem, problem


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from([*UUIDS, *DATE_TIMES, *HEXES, *NAMES]),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def _near(draw: st.DrawFn, value: Any) -> Any:
    """A value close to a valid one: a string with one character changed, added or removed, or its case changed;
    a number moved by one or made a float; or anything JSON."""
    if isinstance(value, str) and value and draw(st.booleans()):
        at = draw(st.integers(0, len(value) - 1))
        char = draw(st.characters(codec="utf-8"))
        return draw(
            st.sampled_from([
                value[:at] + char + value[at + 1 :], value[:at] + char + value[at:], value[:at] + value[at + 1 :],
                value.upper(), value.lower(), value + "\n", value + " ",
            ])
        )  # fmt: skip
    if isinstance(value, int) and not isinstance(value, bool) and draw(st.booleans()):
        return draw(st.sampled_from([value - 1, value + 1, -value, float(value), value + 0.5, 2**63 + value]))
    return draw(JSON_VALUES)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, Any]:
    channel = draw(st.sampled_from(sorted(VALID)))
    message = copy.deepcopy(draw(st.sampled_from(VALID[channel])))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["change", "change", "change", "drop", "add", "nested"]))
        keys = sorted(message)
        if action == "change" and keys:
            key = draw(st.sampled_from(keys))
            message[key] = draw(_near(message[key]))
        elif action == "drop" and keys:
            del message[draw(st.sampled_from(keys))]
        elif action == "add":
            message[draw(st.text(max_size=12))] = draw(JSON_VALUES)
        elif action == "nested" and isinstance(message.get("totals"), dict):
            totals = message["totals"]
            key = draw(st.sampled_from([*sorted(totals), "extra"]))
            totals[key] = draw(_near(totals.get(key, 0)))
    return channel, message


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated())
def test_mutations_of_valid_messages_get_the_reference_verdict(case: tuple[str, Any]) -> None:
    channel, message = case
    assert_same_verdict(channel, message)


# The keywords the committed schemas may use: those whose draft 2020-12 meaning fastjsonschema implements (it reads
# a 2020-12 schema with its 2019-09 code, the newest it has). `items` must be one schema, not a list (2019-09's list
# form is 2020-12's `prefixItems`). A schema that needs another keyword is a decision to make, not to slip in.
KEYWORDS = {
    "$schema", "$id", "$defs", "$ref", "title", "description", "default", "type", "properties", "required",
    "additionalProperties", "anyOf", "const", "enum", "format", "pattern", "items", "minimum", "maxLength",
    "minLength", "propertyNames",
}  # fmt: skip


def _keywords(schema: Any, where: str) -> set[str]:
    assert isinstance(schema, dict), f"{where}: a schema here must be an object"
    found = set(schema)
    for key in ("properties", "$defs"):
        for name, sub in schema.get(key, {}).items():
            found |= _keywords(sub, f"{where}/{key}/{name}")
    for index, sub in enumerate(schema.get("anyOf", [])):
        found |= _keywords(sub, f"{where}/anyOf/{index}")
    for key in ("items", "additionalProperties", "propertyNames"):
        if isinstance(schema.get(key), dict):
            found |= _keywords(schema[key], f"{where}/{key}")
    return found


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("**/*.schema.json")), ids=lambda p: p.name)
def test_every_committed_schema_compiles_for_both_and_keeps_to_shared_keywords(path: Path) -> None:
    schema = SchemaFile(path)
    document = json.loads(path.read_text())
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    unknown = _keywords(document, path.name) - KEYWORDS
    assert not unknown, f"{path.name} uses {sorted(unknown)}: check fastjsonschema implements them as 2020-12 says"
    assert schema.reference.is_valid({}) is schema.fast_accepts({}) is False


def test_the_checker_never_changes_the_message() -> None:
    """fastjsonschema would fill in a missing `schema` from its default; the checker must see what was sent."""
    message = {k: v for k, v in _ACK.items() if k != "schema"}
    before = copy.deepcopy(message)
    schema = _schema_file("ack", _ACK)
    assert not schema.fast_accepts(message)
    assert schema.problem(message) == "(message): 'schema' is a required property"
    assert message == before
