"""The firmware catalog's exception tree.

    CatalogError                 anything this package refuses as broken input
     +-- ImageFormatError        an Upgrade Image that does not follow the layout (field + byte offset)
     +-- KeyFileError            a key file that is not the PEM it should be
     +-- CatalogFormatError      a catalog or catalog source that does not follow its schema (file + where)
     +-- CatalogRefused          a well-formed catalog the station must not accept (signature, expiry, rollback)

A policy refusal is not an error: `decide` returns it as a `Decision`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING

from firmware_catalog.reason import ReasonCode

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "CatalogError",
    "CatalogFormatError",
    "CatalogRefused",
    "ImageFormatError",
    "KeyFileError",
    "format_validation_error",
]


class CatalogError(Exception):
    """Base of every error this package raises on broken input."""


class ImageFormatError(CatalogError):
    """An Upgrade Image broke the layout; names the field and the byte offset where it did."""

    def __init__(self, field: str, offset: int, message: str, source: str | Path | None = None) -> None:
        self.field = field
        self.offset = offset
        self.detail = message
        self.source = str(source) if source is not None else None
        where = f"{self.source}: " if self.source else ""
        super().__init__(f"{where}{field} at byte {offset}: {message}")

    def with_source(self, source: str | Path) -> ImageFormatError:
        return ImageFormatError(self.field, self.offset, self.detail, source)


class KeyFileError(CatalogError):
    """A key file could not be read as the kind of key it should hold."""


class CatalogFormatError(CatalogError):
    """A catalog document or catalog source broke its schema; says which file and where in it."""

    def __init__(self, source: str | Path, where: str, message: str) -> None:
        self.source = str(source)
        self.where = where
        self.detail = message
        super().__init__(f"{self.source}: {where}: {message}" if where else f"{self.source}: {message}")


class CatalogRefused(CatalogError):
    """A catalog that parsed but must not be trusted; `code` is its stable reason code."""

    def __init__(self, code: ReasonCode, message: str) -> None:
        self.code = code
        super().__init__(f"{code.value}: {message}")


def _where(loc: tuple[int | str, ...]) -> str:
    where = ""
    for part in loc:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    return where


def format_validation_error(error: ValidationError) -> tuple[str, str]:
    """The most useful problem of a pydantic error as (where, message), where like `entries[2].firmware_version`.

    A key the schema does not know comes first, named, with the missing key it was probably meant to be: a typo
    `operater` is reported as itself ("did you mean 'operator'?"), not as "operator: Field required".
    """
    problems = error.errors()
    unknown = [p for p in problems if p["type"] == "extra_forbidden"]
    first = unknown[0] if unknown else problems[0]
    if first["type"] != "extra_forbidden":
        return _where(first["loc"]), first["msg"]
    key, parent = str(first["loc"][-1]), first["loc"][:-1]
    missing = [str(p["loc"][-1]) for p in problems if p["type"] == "missing" and p["loc"][:-1] == parent]
    close = difflib.get_close_matches(key, missing, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return _where(first["loc"]), f"unknown key {key!r}{hint}"
