"""The station's event log: what `reflash run` says as it works, one line per event (text for a person, JSON lines
for a collector: docs/station.md lists the events), and the `Emit` callable every part says it through.

The names are an enum, so that a misspelt event fails the type check instead of silently starting a new kind of line,
and docs/station.md's list is checked against it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from station.display_text import display_text

__all__ = ["Emit", "Event", "event_writer"]


class Event(StrEnum):
    STATION_STARTED = "station_started"
    WEB_LISTENING = "web_listening"  # the bench page's URL (docs/bench-page.md)
    CATALOG = "catalog"  # a catalog offered (at start, on SIGHUP): accepted or refused, with its code
    WARNING = "warning"
    JOB_STARTED = "job_started"
    JOB_RESUMED = "job_resumed"  # a hub's interrupted job taken up again
    DECISION = "decision"
    TRANSFER_PROGRESS = "transfer_progress"  # every few seconds of a long transfer
    LINK_ERROR = "link_error"
    JOB_FINISHED = "job_finished"
    JOB_HELD = "job_held"
    HUB_SWAPPED = "hub_swapped"
    HUB_NOT_SCANNED_IN = "hub_not_scanned_in"
    SLOT_ERROR = "slot_error"
    RESULTS_UNCONFIRMED = "results_unconfirmed"
    STATION_STOPPED = "station_stopped"


class Emit(Protocol):
    def __call__(self, event: Event, **fields: Any) -> None: ...


def event_writer(log_format: str, quiet: bool) -> Callable[..., None]:
    """An `Emit` that writes to stdout: `json` (one object a line: `ts`, `event`, the fields), `text` (time, event,
    key=value; nothing while the live table owns the terminal, `quiet`), or `none`."""

    def emit(event: Event, **fields: Any) -> None:
        if log_format == "json":
            line = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event, **fields}
            print(json.dumps(line, default=str), flush=True)
        elif log_format == "text" and not quiet:
            details = " ".join(f"{k}={_field_text(v)}" for k, v in fields.items() if v is not None)
            print(f"{datetime.now().strftime('%H:%M:%S')} {display_text(event)} {details}", flush=True)

    return emit


def _field_text(value: Any) -> str:
    """One event field for a text log line: text as it is (escaped), and anything with structure (the outcomes
    counted, every slot's state) as compact JSON, never a Python repr an operator has to read."""
    if isinstance(value, dict | list | tuple):
        return display_text(json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":")))
    if isinstance(value, bool):
        return "true" if value else "false"
    return display_text(value)
