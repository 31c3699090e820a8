"""`reflash fleet status`: every station a broker knows, from their retained status and heartbeat messages."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime

import click
from rich.table import Table

from station.cli.output import EXIT_INPUT, EXIT_REFUSED, console, fail, print_json
from station.display_text import display_cell
from station.outcome import Outcome
from station.status_view import OUTCOME_STYLE

__all__ = ["fleet"]


@click.group()
def fleet() -> None:
    """Every station a broker knows: presence, slots, hubs today, backlog, catalog."""


@fleet.command()
@click.option("--broker", required=True, help="mqtt://host:port or mqtts://host:port (a dashboard account will do)")
@click.option("--username", help="MQTT username (the password from $REFLASH_MQTT_PASSWORD)")
@click.option("--ca", type=click.Path(dir_okay=False), help="CA certificate for mqtts:// (default: the system's)")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.1, max=3600), default=10.0, show_default=True,
              help="Seconds to wait for the broker")  # fmt: skip
@click.option("--json", "as_json", is_flag=True)
def status(broker: str, username: str | None, ca: str | None, timeout_s: float, as_json: bool) -> None:
    """Every station the broker holds a retained status or heartbeat of; a catalog older than the newest is flagged."""
    from station.fleet import FleetError, client_settings, collect

    try:
        settings = client_settings(broker, username=username, ca=ca)
    except FleetError as exc:
        fail(str(exc), EXIT_INPUT, as_json)
    try:
        view = asyncio.run(collect(broker, settings, timeout_s=timeout_s))
    except FleetError as exc:
        fail(str(exc), EXIT_REFUSED, as_json)
    if as_json:
        print_json(view.model_dump(mode="json"))
        return
    table = Table(title=display_cell(f"Fleet at {broker}"), caption=display_cell(
        f"{len(view.stations)} stations; newest catalog serial {view.newest_catalog_serial or '-'}; "
        f"hubs today = {view.day} (UTC)"))  # fmt: skip
    for column in ("station", "region", "state", "last seen", "slots busy", "hubs today", "outbox", "anchors",
                   "catalog"):  # fmt: skip
        table.add_column(column, no_wrap=column not in ("hubs today",))
    for s in view.stations:
        hubs = display_cell("")
        for n, (outcome, count) in enumerate(sorted(s.hubs_today.items())):
            style = OUTCOME_STYLE[Outcome(outcome)] if outcome in Outcome.__members__ else ""
            hubs.append(("" if n == 0 else ", ") + f"{outcome} {count}", style=style)
        catalog = display_cell(str(s.catalog_serial) if s.catalog_serial is not None else "-")
        if s.catalog_outdated:
            catalog.append(f" OLDER than {view.newest_catalog_serial}", style="bold red")
        table.add_row(
            display_cell(s.station),
            display_cell(s.region),
            display_cell(s.state, "green" if s.state == "online" else "red"),
            display_cell(_ago(s.last_seen, view.at)),
            display_cell(f"{s.slots_busy}/{s.slots}" if s.slots_busy is not None else "-"),
            hubs,
            display_cell(str(s.outbox_backlog) if s.outbox_backlog is not None else "-"),
            display_cell(str(s.anchors_waiting) if s.anchors_waiting is not None else "-"),
            catalog,
        )
    console().print(table)
    if view.unreadable:
        click.echo(f"{len(view.unreadable)} retained message(s) this version cannot read: "
                   + ", ".join(view.unreadable), err=True)  # fmt: skip
    sys.exit(0)


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    seconds = max(0, int((now - moment).total_seconds()))
    ago = f"{seconds} s" if seconds < 120 else f"{seconds // 60} min" if seconds < 7200 else f"{seconds // 3600} h"
    return f"{moment.strftime('%Y-%m-%d %H:%M:%S')}Z ({ago} ago)"
