"""`reflash run` and `reflash status`: the station at work, and a look at it from another terminal."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time

import click

from station.cli.output import EXIT_INPUT, console, print_json
from station.cli.station_options import config_option
from station.config import ConfigError, load_config
from station.daemon import render_status, run_station, status_path
from station.display_text import DisplayTextFormatter

__all__ = ["run", "status"]


@click.command()
@config_option
@click.option("--once", is_flag=True, help="Process the hubs on the bench now, then exit (0: every hub has an outcome)")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--live/--no-live", default=None, help="Live table (default: when stdout is a terminal)")
def run(config_path: str, once: bool, log_format: str, live: bool | None) -> None:
    """Drive every slot of the bench: identify, decide, flash, verify, activate, read back, record, report."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INPUT)
    _log_to_stderr()
    sys.exit(asyncio.run(run_station(config, once=once, log_format=log_format, live=live)))


def _log_to_stderr() -> None:
    """Warnings and errors on stderr, one line each, with whatever a hub said made safe to show (display_text)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(DisplayTextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True)
def status(config_path: str, as_json: bool) -> None:
    """Show the bench as the running station last wrote it (every half second)."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INPUT)
    path = status_path(config)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        click.echo(f"no status at {path}: the station has not run with this configuration", err=True)
        sys.exit(1)
    age = time.time() - float(data.get("updated_at", 0))
    data["age_s"] = round(age, 1)
    data["running"] = age < 5
    if as_json:
        print_json(data)
        return
    console().print(render_status(data))
    if not data["running"]:
        click.echo(f"(the station is not running: this is its state {age:.0f} s ago)")
