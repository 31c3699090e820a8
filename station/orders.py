"""Re-flash orders: the DCC's request files, read strictly, and the reconciliation report.

A DCC User asks for the service through DCC Logistics with a list of Communications Hubs (MP155); only the party
that ordered those hubs may ask. A request file is taken whole or not at all: every problem is listed with its line,
and nothing is stored unless there are none. A stock order is the CSP's own stock, with no requesting party.

Request files (docs/orders.md):

    CSV   header `order_ref,requesting_party,csp_region,chf_id` (and optionally `kind`), one hub per row
    JSON  {"order_ref": ..., "kind": "dcc"|"stock", "requesting_party": ..., "csp_region": ..., "chf_ids": [...]}
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_catalog.eui64 import normalise_eui64
from station.identifier import check_label, check_order_ref

__all__ = ["REGIONS", "OrderImportError", "OrderRequest", "read_order_file"]

REGIONS = ("North", "Central", "South")
CSV_COLUMNS = ("order_ref", "requesting_party", "csp_region", "chf_id")


class OrderImportError(Exception):
    """A request file refused whole; `problems` lists every one found, each naming its line."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        listing = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(f"{source}: refused, {len(problems)} problem(s):\n{listing}")


@dataclass
class OrderRequest:
    ref: str
    kind: str
    requesting_party: str | None
    region: str
    hubs: list[tuple[str, int]]  # (CHF ID, line in the file)
    source: str
    sha256: str
    problems: list[str] = field(default_factory=list)


def _check_header(req: OrderRequest, where: str) -> None:
    if not req.ref:
        req.problems.append(f"{where}: order_ref is empty")
    else:
        try:
            check_order_ref(req.ref)
        except ValueError as exc:
            req.problems.append(f"{where}: order_ref: {exc}")
    if req.requesting_party:
        try:
            check_label(req.requesting_party)
        except ValueError as exc:
            req.problems.append(f"{where}: requesting_party: {exc}")
    if req.kind not in ("dcc", "stock"):
        req.problems.append(f"{where}: kind must be 'dcc' or 'stock', got {req.kind!r}")
    if req.kind == "dcc" and not req.requesting_party:
        req.problems.append(f"{where}: a DCC order needs the requesting_party (the DCC User that ordered the hubs)")
    if req.kind == "stock" and req.requesting_party:
        req.problems.append(f"{where}: a stock order has no requesting_party, got {req.requesting_party!r}")
    if req.region not in REGIONS:
        req.problems.append(f"{where}: csp_region must be one of {', '.join(REGIONS)}, got {req.region!r}")


def _add_hub(req: OrderRequest, raw: Any, line: int, seen: dict[str, int]) -> None:
    try:
        chf_id = normalise_eui64(str(raw))
    except ValueError as exc:
        req.problems.append(f"line {line}: chf_id: {exc}")
        return
    if chf_id in seen:
        req.problems.append(f"line {line}: chf_id {chf_id} is listed twice (first on line {seen[chf_id]})")
        return
    seen[chf_id] = line
    req.hubs.append((chf_id, line))


def _read_csv(text: str, source: str, digest: str) -> OrderRequest:
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[list[str]] = []
    try:
        rows.extend(reader)
    except csv.Error as exc:
        raise OrderImportError(source, [f"line {reader.line_num}: not CSV: {exc}"]) from exc
    if not rows:
        raise OrderImportError(source, ["line 1: the file is empty"])
    header = [cell.strip() for cell in rows[0]]
    missing = [c for c in CSV_COLUMNS if c not in header]
    unknown = [c for c in header if c not in (*CSV_COLUMNS, "kind")]
    if missing or unknown:
        problems = [f"line 1: missing column {c!r}" for c in missing] + [
            f"line 1: unknown column {c!r}" for c in unknown
        ]
        raise OrderImportError(source, problems)
    col = {name: header.index(name) for name in header}
    body = [(number, row) for number, row in enumerate(rows[1:], 2) if any(cell.strip() for cell in row)]
    if not body:
        raise OrderImportError(source, ["line 2: no hubs listed"])

    def cell(row: list[str], name: str) -> str:
        index = col.get(name)
        return row[index].strip() if index is not None and index < len(row) else ""

    first_line, first = body[0]
    req = OrderRequest(
        ref=cell(first, "order_ref"),
        kind=cell(first, "kind") or "dcc",
        requesting_party=cell(first, "requesting_party") or None,
        region=cell(first, "csp_region"),
        hubs=[],
        source=source,
        sha256=digest,
    )
    _check_header(req, f"line {first_line}")
    seen: dict[str, int] = {}
    for number, row in body:
        if len(row) != len(header):
            req.problems.append(f"line {number}: {len(row)} fields, the header has {len(header)}")
            continue
        for name, value in (
            ("order_ref", cell(row, "order_ref")),
            ("requesting_party", cell(row, "requesting_party") or None),
            ("csp_region", cell(row, "csp_region")),
            ("kind", cell(row, "kind") or "dcc"),
        ):
            expected = getattr(req, {"order_ref": "ref", "csp_region": "region"}.get(name, name))
            if value != expected:
                req.problems.append(f"line {number}: {name} {value!r} differs from line {first_line}'s {expected!r}")
        _add_hub(req, cell(row, "chf_id"), number, seen)
    return req


def _json_lines(text: str, values: list[Any], after: int) -> list[int]:
    """Line of each array element, found in order in the text (JSON gives no positions of its own)."""
    lines, position = [], after
    for value in values:
        found = text.find(json.dumps(value), position) if isinstance(value, str) else -1
        if found < 0:
            lines.append(text.count("\n", 0, position) + 1)
            continue
        position = found + 1
        lines.append(text.count("\n", 0, found) + 1)
    return lines


def _read_json(text: str, source: str, digest: str) -> OrderRequest:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OrderImportError(source, [f"line {exc.lineno} column {exc.colno}: not JSON: {exc.msg}"]) from exc
    if not isinstance(data, dict):
        raise OrderImportError(source, ["line 1: the file must hold one JSON object"])
    known = {"order_ref", "kind", "requesting_party", "csp_region", "chf_ids"}
    problems = [f"line 1: unknown field {name!r}" for name in data if name not in known]
    ids = data.get("chf_ids")
    if not isinstance(ids, list) or not ids:
        problems.append("line 1: chf_ids must be a non-empty list of CHF device IDs")
    if problems:
        raise OrderImportError(source, problems)
    assert isinstance(ids, list)
    req = OrderRequest(
        ref=str(data.get("order_ref") or ""),
        kind=str(data.get("kind") or "dcc"),
        requesting_party=data.get("requesting_party") or None,
        region=str(data.get("csp_region") or ""),
        hubs=[],
        source=source,
        sha256=digest,
    )
    _check_header(req, "line 1")
    seen: dict[str, int] = {}
    for value, line in zip(ids, _json_lines(text, ids, text.find('"chf_ids"')), strict=True):
        _add_hub(req, value, line, seen)
    return req


def read_order_file(path: str | Path) -> OrderRequest:
    """Read a request file (by extension: .csv or .json). Raises OrderImportError listing every problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise OrderImportError(str(path), [f"cannot read: {exc.strerror}"]) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise OrderImportError(str(path), [f"byte {exc.start}: not UTF-8 text"]) from exc
    digest = hashlib.sha256(raw).hexdigest()
    suffix = path.suffix.lower()
    if suffix == ".csv":
        req = _read_csv(text, str(path), digest)
    elif suffix == ".json":
        req = _read_json(text, str(path), digest)
    else:
        raise OrderImportError(str(path), [f"unknown file type {suffix!r}: use .csv or .json"])
    if req.problems:
        raise OrderImportError(str(path), req.problems)
    return req
