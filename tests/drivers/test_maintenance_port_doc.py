"""docs/maintenance-port.md against the construct definitions: the doc cannot drift from the wire format."""

from __future__ import annotations

import re
from pathlib import Path

from drivers.frame import FRAME_FIELDS, ActivationCode, MessageType, NakReason, RefuseReason, message_fields

DOC = Path(__file__).parents[2] / "docs" / "maintenance-port.md"


def _section(text: str, heading: str) -> str:
    start = text.index(heading + "\n")
    rest = text[start + len(heading) + 1 :]
    end = re.search(r"^#{2,4} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def _rows(section: str) -> list[list[str]]:
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("|")
    ]
    return [r for r in rows[2:]]  # skip the header and the --- line


def test_frame_layout_table_matches_the_construct_definition() -> None:
    rows = _rows(_section(DOC.read_text(), "## Frame layout"))
    assert [(r[2], r[0], r[1]) for r in rows] == [(f.name, f.offset, f.size) for f in FRAME_FIELDS]


def test_every_message_is_documented_field_by_field() -> None:
    text = DOC.read_text()
    headings = re.findall(r"^#### (\w+) \(0x([0-9A-F]{2})\)$", text, re.MULTILINE)
    assert {name: int(code, 16) for name, code in headings} == {k.name: k.value for k in MessageType}
    for kind in MessageType:
        section = _section(text, f"#### {kind.name} (0x{kind.value:02X})")
        rows = _rows(section)
        expected = message_fields(kind)
        if not expected:
            assert "Empty payload." in section
            continue
        assert [(r[2], r[1]) for r in rows] == list(expected), kind.name
        offset = 0
        for row, (_, size) in zip(rows, expected, strict=True):
            if not size.isdigit():
                assert row[0] in (str(offset), "…"), kind.name
                break
            assert row[0] == str(offset), f"{kind.name}.{row[2]}"
            offset += int(size)


def test_code_tables_match_the_enums() -> None:
    text = DOC.read_text()
    cs06 = {int(r[0]): r[1] for r in _rows(_section(text, "## Verify and activate")) if r[0].isdigit()}
    assert cs06 == {c.value: c.name.replace("_", " ").title() for c in ActivationCode}
    codes = _rows(_section(text, "## Codes"))
    refuse = {int(r[0]): r[1].split(":")[0] for r in codes if r[1].split(":")[0] in RefuseReason.__members__}
    nak = {int(r[0]): r[1].split(":")[0] for r in codes if r[1].split(":")[0] in NakReason.__members__}
    assert refuse == {c.value: c.name for c in RefuseReason}
    assert nak == {c.value: c.name for c in NakReason}
