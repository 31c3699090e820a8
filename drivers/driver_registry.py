"""The jig driver registry: the names a slot's `driver` may take, found through entry points.

A distribution offers drivers in the `reflash.jig_drivers` entry-point group, one entry per name, pointing at a
`JigDriver` subclass (`serial = "drivers.url_jig:UrlJig"`; the simulators register `sim` the same way). A driver is
imported only when a slot names it, so a station with serial jigs never imports the simulators or pyusb. A new
vendor's driver is one module and one entry point; `register_driver` adds one in-process (tests, embedding).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from drivers.jig_driver import JigDriver

__all__ = ["ENTRY_POINT_GROUP", "UnknownDriverError", "build_driver", "driver_class", "driver_names", "register_driver"]

ENTRY_POINT_GROUP = "reflash.jig_drivers"

# Registered in this process; these win over entry points of the same name.
_REGISTERED: dict[str, type[JigDriver]] = {}


class UnknownDriverError(KeyError):
    """No driver has this name; the message lists the names there are."""

    def __str__(self) -> str:
        return str(self.args[0])


def _entry_points() -> dict[str, EntryPoint]:
    # Read afresh each time: a distribution installed (or put on sys.path) since is seen.
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def register_driver(name: str, driver: type[JigDriver]) -> None:
    """Make `name` usable in configuration in this process."""
    _REGISTERED[name] = driver


def driver_names() -> tuple[str, ...]:
    return tuple(sorted(set(_entry_points()) | set(_REGISTERED)))


def driver_class(name: str) -> type[JigDriver]:
    """The driver class configured as `name`. Raises `UnknownDriverError` (a KeyError) naming the known drivers,
    `LookupError` when its entry point cannot be loaded, `TypeError` when it is not a `JigDriver`."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    entry = _entry_points().get(name)
    if entry is None:
        known = ", ".join(driver_names())
        if not known:  # an installation that predates the entry points, or none (a source tree on sys.path)
            known = f"none (no {ENTRY_POINT_GROUP} entry points: install the package, e.g. pip install -e .)"
        raise UnknownDriverError(f"unknown jig driver {name!r}; known: {known}")
    try:
        loaded = entry.load()
    except (ImportError, AttributeError) as exc:  # a vendor's package half installed, or a wrong entry point
        raise LookupError(f"jig driver {name!r} ({entry.value}) cannot be loaded: {exc}") from exc
    if not (isinstance(loaded, type) and issubclass(loaded, JigDriver)):
        raise TypeError(f"jig driver {name!r} ({entry.value}) is not a JigDriver")
    return loaded


def build_driver(name: str, options: Mapping[str, Any], base_dir: Path | None = None) -> JigDriver:
    """The driver `name` built from a slot's table, relative paths in it taken from `base_dir`."""
    return driver_class(name).from_config(options, base_dir)
