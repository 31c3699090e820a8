"""What the operator sees of a running station: its status file (written by the daemon twice a second), the
slots table rendered from it, and whether a daemon is running. Light on imports, so that `reflash status` starts
fast: it needs neither the daemon nor the store.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table

from station.atomic_file import write_atomically
from station.display_text import display_cell, display_text
from station.outcome import Outcome

if TYPE_CHECKING:
    from station.config import StationConfig
    from station.live_state import LiveState, StationSnapshot

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_STORE",
    "StatusTable",
    "daemon_running",
    "render_status",
    "status_path",
    "status_path_of",
    "summary_line",
]

# `[station] store` when the config does not say (station/config.py uses the same; a test keeps them equal).
DEFAULT_STORE = "state/station.db"
# The daemon rewrites its status file every half second; older than this, no daemon is running.
_RUNNING_WITHIN_S = 5.0
# Each outcome's colour; the outcome is always written out too, so colour is never the only signal. One entry per
# Outcome (checked below), so that a new outcome cannot be shown without one.
OUTCOME_STYLE: dict[Outcome, str] = {
    Outcome.REFLASHED: "green",
    Outcome.ALREADY_CURRENT: "cyan",
    Outcome.REFUSED: "yellow",
    Outcome.FAILED: "red",
    Outcome.QUARANTINED: "bold red",
    Outcome.SCRAP: "magenta",
    Outcome.UNEXPECTED: "bold yellow",
}
if set(OUTCOME_STYLE) != set(Outcome):
    raise TypeError("OUTCOME_STYLE must have exactly one style per Outcome")


def status_path_of(store: Path) -> Path:
    """The status file the daemon writes beside its store."""
    return store.parent / "status.json"


def status_path(config: StationConfig) -> Path:
    return status_path_of(config.resolve(config.station.store))


def daemon_running(config: StationConfig) -> bool:
    """Whether a station daemon (`reflash run`) is running with this configuration: its status file is fresh and
    says it is not stopped."""
    try:
        data = json.loads(status_path(config).read_text())
    except (OSError, ValueError):
        return False
    return bool(time.time() - float(data.get("updated_at", 0)) < _RUNNING_WITHIN_S and not data.get("stopped"))


# Below this many columns the table drops its borders, shortens the bar and shows the end of each CHF ID (the end
# tells hubs of one batch apart: they share a prefix).
_WIDE = 120
_CHF_TAIL = 8  # "78-90-A0": the last three bytes of an EUI-64


class StatusTable:
    """The slots table, laid out for the width it is drawn at: rich asks it when it renders (a resized terminal, an
    80-column console at the bench), so the live view and `reflash status` fit whatever they are shown on."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield render_status(self.status, width=options.max_width)


class StatusFile:
    """status.json, kept by the daemon: a subscriber of the live state that rewrites the file on every change (at
    most every `interval_s`) and at least that often while nothing changes, since the file's age is how `reflash
    status` and one-shot commands know that a station runs. A full or read-only disk is said once when writes start
    failing and once when they work again; the station goes on either way."""

    def __init__(self, path: Path, interval_s: float = 0.5) -> None:
        self.path = path
        self.interval_s = interval_s
        self._failing = False

    async def follow(self, live: LiveState) -> None:
        async for snapshot in live.subscribe(min_interval_s=self.interval_s, heartbeat_s=self.interval_s):
            self.write(snapshot)

    def write(self, snapshot: StationSnapshot) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, json.dumps(snapshot.model_dump(mode="json"), indent=1), durable=False)
        except OSError as exc:
            if not self._failing:
                log.error("cannot write the live status %s: %s; retrying every %.1f s", self.path,
                          exc.strerror or exc, self.interval_s)  # fmt: skip
            self._failing = True
            return
        if self._failing:
            log.warning("the live status %s is written again", self.path)
        self._failing = False


def render_status(status: dict[str, Any], width: int | None = None) -> Table:
    """The operator's view: one row per slot, totals at the foot. Every cell is a Text (`display_cell`): what a hub
    says is shown as it is, never read as rich markup, and its control characters are escaped. Narrower than
    `_WIDE` columns, the layout is compact: the slot name and the distinguishing end of the CHF ID always show,
    the state and the last outcome give way."""
    compact = width is not None and width < _WIDE
    totals = status["totals"]
    caption = (
        f"{totals['hubs']} hubs, {totals['hubs_per_hour']} per hour, {totals['bytes_per_s'] / 1024:.0f} KiB/s; "
        + ", ".join(f"{k} {v}" for k, v in totals["outcomes"].items())
    )
    table = Table(
        title=display_cell(f"Station {status['station']}"),
        caption=display_cell(caption),
        box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD,
        padding=(0, 1),
        collapse_padding=compact,
        pad_edge=not compact,
        width=width if compact else None,
    )
    bar_cells = 10 if compact else 20
    table.add_column("slot", no_wrap=True, min_width=4)
    table.add_column("hub (CHF)", no_wrap=True, min_width=_CHF_TAIL + 1 if compact else None)
    table.add_column("state", no_wrap=True, overflow="ellipsis", ratio=1 if compact else None, min_width=6)
    table.add_column("progress", no_wrap=True, min_width=bar_cells + 5)
    table.add_column("KiB/s", no_wrap=True, justify="right")
    table.add_column("ETA", no_wrap=True, justify="right")
    table.add_column("last outcome", no_wrap=True, overflow="ellipsis", ratio=1 if compact else None, min_width=6)
    for slot in status["slots"]:
        done, total = slot["bytes_done"], slot["bytes_total"]
        filled = int(bar_cells * done / total) if total else 0
        bar = f"{'█' * filled}{'░' * (bar_cells - filled)} {100 * done // total:3d}%" if total else ""
        eta = _duration(slot["eta_s"]) if slot["eta_s"] is not None else ""
        last = slot["last_outcome"] or ""
        reason = slot["last_reason"] or ""
        outcome = display_cell(last, OUTCOME_STYLE[Outcome(last)] if last in Outcome.__members__ else "")
        if last and reason and reason != last:
            outcome.append(" " + display_text(reason))
        chf = slot["chf_id"] or ""
        if compact and len(chf) > _CHF_TAIL:
            chf = "…" + chf[-_CHF_TAIL:]
        table.add_row(
            display_cell(slot["name"]),
            display_cell(chf),
            display_cell(
                slot["state"]
                + (f" {slot['fault']}" if slot.get("fault") else "")
                + (f": {slot['message']}" if slot["message"] else "")
            ),
            display_cell(bar),
            display_cell(f"{slot['bytes_per_s'] / 1024:.0f}" if slot["bytes_per_s"] else ""),
            display_cell(eta),
            outcome,
        )
    return table


def _duration(seconds: float) -> str:
    """A time left as an operator reads it: 42s, 3m05s, 1h02m."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def summary_line(status: dict[str, Any]) -> str:
    """The station's last word on a terminal, under the table as it stops: how many hubs, how fast, how they
    ended, and which slots it leaves unfinished (a held or faulted slot needs the operator)."""
    totals = status["totals"]
    outcomes = ", ".join(f"{k} {v}" for k, v in totals["outcomes"].items()) or "no outcomes"
    line = (
        f"Station {status['station']} stopped after {_duration(totals['uptime_s'])}: {totals['hubs']} hubs ({outcomes})"
    )
    unfinished = [slot for slot in status["slots"] if slot["state"] in ("held", "error")]
    if unfinished:
        line += "; unfinished: " + "; ".join(
            f"{slot['name']} {slot['state']}"
            + (f" {slot['fault']}" if slot.get("fault") else "")
            + (f" ({slot['message']})" if slot["message"] else "")
            for slot in unfinished
        )
    return display_text(line)
