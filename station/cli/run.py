"""`reflash run` and `reflash status`: the station at work, and a look at it from another terminal."""

from __future__ import annotations

import json
import logging
import sys
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from station.cli.output import EXIT_INPUT, console, print_json
from station.cli.station_options import config_option
from station.display_text import DisplayTextFormatter
from station.status_view import DEFAULT_STORE, StatusTable, status_path_of

__all__ = ["run", "status"]


@click.command()
@config_option
@click.option("--once", is_flag=True, help="Process the hubs on the bench now, then exit (0: every hub has an outcome)")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--live/--no-live", default=None, help="Live table (default: when stdout is a terminal)")
def run(config_path: str, once: bool, log_format: str, live: bool | None) -> None:
    """Drive every slot of the bench: identify, decide, flash, verify, activate, read back, record, report."""
    import asyncio

    from station.config import ConfigError, load_config
    from station.daemon import run_station

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INPUT)
    _log_to_stderr(log_format)
    sys.exit(asyncio.run(run_station(config, once=once, log_format=log_format, live=live)))


class _JsonFormatter(logging.Formatter):
    """One JSON object per line, in the shape of the station's events (`ts`, `event`), for --log-format json."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "event": "log",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        return json.dumps(line, default=str)


def _log_to_stderr(log_format: str = "text") -> None:
    """Warnings and errors on stderr, one line each: JSON with --log-format json (so that a log collector reads
    every line), otherwise text with whatever a hub said made safe to show (display_text)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(DisplayTextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True)
def status(config_path: str, as_json: bool) -> None:
    """Show the bench as the running station last wrote it (every half second)."""
    path = _status_file(config_path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        click.echo(f"no status at {path}: the station has not run with this configuration", err=True)
        sys.exit(1)
    age = time.time() - float(data.get("updated_at", 0))
    data["age_s"] = round(age, 1)
    data["running"] = age < 5 and not data.get("stopped")
    reporting = data.get("reporting")
    if reporting:
        outbox = reporting["outbox"]
        oldest = outbox.get("oldest_unconfirmed_at")
        outbox["oldest_unconfirmed_age_s"] = (
            round(time.time() - datetime.fromisoformat(oldest).timestamp(), 1) if oldest else None
        )
    if as_json:
        print_json(data)
        return
    console().print(StatusTable(data))
    for line in _reporting_lines(reporting):
        click.echo(line)
    if not data["running"]:
        click.echo(f"(the station is not running: this is its state {age:.0f} s ago)")


def _status_file(config_path: str) -> Path:
    """The status file of the station `config_path` configures. Read from the TOML's `[station] store` alone: the
    whole configuration's models cost a fifth of a second of CPU that `status` need not pay. A config that cannot
    be read as TOML is reported by the full loader, with its file and line."""
    path = Path(config_path)
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8-sig"))
        store = Path(str(data.get("station", {}).get("store", DEFAULT_STORE)))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError):
        from station.config import ConfigError, load_config

        try:
            config = load_config(path)
        except ConfigError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_INPUT)
        store = config.station.store
    return status_path_of(store if store.is_absolute() else path.parent / store)


def _reporting_lines(reporting: dict[str, Any] | None) -> list[str]:
    """The broker link, the DSP bridges and the outbox, below the slots table."""
    if reporting is None:
        return ["reporting: no [mqtt] broker configured"]
    broker, outbox = reporting["broker"], reporting["outbox"]
    link = "connected" if broker["connected"] else "NOT connected"
    if broker.get("since"):
        link += f" since {broker['since']}"
    if not broker["connected"] and broker.get("last_error"):
        link += f" ({broker['last_error']})"
    bridge = {True: "online", False: "NONE online", None: "no status seen"}[reporting["bridge_online"]]
    age = outbox.get("oldest_unconfirmed_age_s")
    lines = [
        f"broker: {link}; client id {broker['client_id']}",
        f"DSP bridge: {bridge}; last DSP ack: {reporting.get('last_ack_at') or outbox.get('last_dsp_ack_at') or '-'}",
        f"outbox: {outbox['pending']} pending, {outbox['at_broker']} at the broker awaiting a DSP ack, "
        f"{outbox['confirmed']} confirmed, {outbox['rejected']} rejected; oldest unconfirmed: "
        + (f"{age:.0f} s" if age is not None else "-"),
    ]
    if outbox.get("anchors_waiting"):
        lines.append(f"audit checkpoints not yet acked by the DSP: {outbox['anchors_waiting']}")
    if outbox["refused"]:
        lines.append(f"REFUSED by the broker: {outbox['refused']} messages; last: {outbox['last_refusal']}")
    if reporting.get("refused_acks"):
        lines.append(f"acks refused (not ack.schema.json): {reporting['refused_acks']}")
    return lines
