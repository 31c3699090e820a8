"""What the operator sees of a running station: its status file (written by the daemon twice a second), the
slots table rendered from it, and whether a daemon is running. Light on imports, so that `reflash status` starts
fast: it needs neither the daemon nor the store.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from station.display_text import display_cell, display_text

if TYPE_CHECKING:
    from station.config import StationConfig

__all__ = ["DEFAULT_STORE", "daemon_running", "render_status", "status_path", "status_path_of"]

# `[station] store` when the config does not say (station/config.py uses the same; a test keeps them equal).
DEFAULT_STORE = "state/station.db"
# The daemon rewrites its status file every half second; older than this, no daemon is running.
_RUNNING_WITHIN_S = 5.0
_OUTCOME_STYLE = {
    "REFLASHED": "green",
    "ALREADY_CURRENT": "cyan",
    "REFUSED": "yellow",
    "FAILED": "red",
    "QUARANTINED": "bold red",
    "SCRAP": "magenta",
    "UNEXPECTED": "bold yellow",
}


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


def render_status(status: dict[str, Any]) -> Table:
    """The operator's view: one row per slot, totals at the foot. Every cell is a Text (`display_cell`): what a hub
    says is shown as it is, never read as rich markup, and its control characters are escaped."""
    totals = status["totals"]
    table = Table(
        title=display_cell(f"Station {status['station']}"),
        caption=display_cell(
            f"{totals['hubs']} hubs, {totals['hubs_per_hour']} per hour, {totals['bytes_per_s'] / 1024:.0f} KiB/s; "
            + ", ".join(f"{k} {v}" for k, v in totals["outcomes"].items())
        ),
    )
    for column in ("slot", "hub (CHF)", "state", "progress", "KiB/s", "ETA", "last outcome"):
        table.add_column(column, no_wrap=True)
    for slot in status["slots"]:
        done, total = slot["bytes_done"], slot["bytes_total"]
        filled = int(20 * done / total) if total else 0
        bar = f"{'█' * filled}{'░' * (20 - filled)} {100 * done // total:3d}%" if total else ""
        eta = f"{slot['eta_s']:.0f}s" if slot["eta_s"] is not None else ""
        last = slot["last_outcome"] or ""
        reason = slot["last_reason"] or ""
        outcome = display_cell(last, _OUTCOME_STYLE.get(last, ""))
        if last and reason and reason != last:
            outcome.append(" " + display_text(reason))
        table.add_row(
            display_cell(slot["name"]),
            display_cell(slot["chf_id"]),
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
