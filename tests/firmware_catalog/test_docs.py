"""The specs in docs/ are what integrators read: they must say what the code does."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from firmware_catalog.catalog import CatalogDocument, CatalogEntry, RevokedKey, TrustedKey
from firmware_catalog.catalog_source import CatalogSource, SourceKey, SourceRevokedKey
from firmware_catalog.image import HEADER_FIELDS, HEADER_LENGTH, TRAILER_SIZE
from firmware_catalog.reason import RULES

DOCS = Path(__file__).parents[2] / "docs"


def table_rows(text: str, first_header: str) -> list[list[str]]:
    """Rows of the first Markdown table whose header starts with `first_header`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def test_image_layout_table_matches_the_construct_definition() -> None:
    rows = table_rows((DOCS / "firmware-images.md").read_text(), "offset")
    assert [(int(r[0]), int(r[1]), r[2]) for r in rows] == [(f.offset, f.size, f.name) for f in HEADER_FIELDS]
    assert sum(f.size for f in HEADER_FIELDS) == HEADER_LENGTH
    text = (DOCS / "firmware-images.md").read_text()
    assert f"n = total_size - {HEADER_LENGTH + TRAILER_SIZE}" in text


def test_policy_table_is_the_rules_in_order() -> None:
    rows = table_rows((DOCS / "policy.md").read_text(), "#")
    assert [(int(r[0]), r[1].strip("`"), r[2], r[3], r[4]) for r in rows] == [
        (i, rule.code.value, rule.when, rule.ends.value, rule.source) for i, rule in enumerate(RULES, 1)
    ]


def _documented_fields(text: str) -> set[str]:
    names: set[str] = set()
    for pair in re.findall(r"^\| `(\w+)`(?:, `(\w+)`)?", text, flags=re.MULTILINE):
        names.update(name for name in pair if name)
    return names


def test_catalog_doc_lists_every_schema_field() -> None:
    text = (DOCS / "catalog.md").read_text()
    documented = _documented_fields(text)
    models: list[type[BaseModel]] = [
        CatalogSource, SourceKey, SourceRevokedKey, CatalogDocument, CatalogEntry,
    ]  # fmt: skip
    for model in models:
        missing = set(model.model_fields) - documented
        assert not missing, f"{model.__name__} fields not in docs/catalog.md: {sorted(missing)}"
    for model in (TrustedKey, RevokedKey):
        for name in model.model_fields:
            assert f"`{name}`" in text, f"{model.__name__}.{name} not in docs/catalog.md"
