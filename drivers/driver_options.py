"""A jig driver's options: the typed model of a slot's table, and the path type resolved against the config file.

Every driver declares `options_model`, a `DriverOptions` subclass: unknown keys are refused and wrong values named
when the configuration loads, not at the first hub. A field typed `ConfigPath` is a file or folder named in the
configuration; a relative one is taken from the configuration file's folder (the `base_dir` given to
`validate_options`), so the station need not know which options of which driver are paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, ValidationInfo

from firmware_catalog.errors import format_validation_error

__all__ = ["BASE_DIR", "ConfigPath", "DriverOptions", "validate_options"]

# The validation-context key that holds the folder relative paths are taken from.
BASE_DIR = "base_dir"

_Model = TypeVar("_Model", bound="DriverOptions")


def _resolve(path: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get(BASE_DIR)
    if base is None or path.is_absolute():
        return path
    return Path(base) / path


ConfigPath = Annotated[Path, AfterValidator(_resolve)]
"""A path option: relative ones are resolved against the configuration file's folder."""


class DriverOptions(BaseModel):
    """The base of every driver's options model: frozen, and an unknown key is an error.

    `url` is the slot's `url`, which every slot has (a driver with no use for it ignores it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = None


def validate_options(model: type[_Model], options: Mapping[str, Any], base_dir: Path | None = None) -> _Model:
    """`options` checked against `model`, relative `ConfigPath`s taken from `base_dir`. Raises `ValueError`
    naming the first wrong option ("option baud: Input should be a valid integer")."""
    try:
        return model.model_validate(dict(options), context={BASE_DIR: base_dir})
    except ValidationError as exc:
        where, message = format_validation_error(exc)
        raise ValueError(f"option {where}: {message}") from None
