"""`reflash audit ...`: verify the hash chain and its signed checkpoints; export entries as JSON lines."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from station.atomic_file import write_atomically
from station.audit import verify_chain
from station.cli.output import EXIT_REFUSED, print_json
from station.cli.station_options import config_option, open_store

__all__ = ["audit"]


@click.group()
def audit() -> None:
    """The tamper-evident audit trail."""


@audit.command()
@click.option("--json", "as_json", is_flag=True)
@config_option
def verify(as_json: bool, config_path: str) -> None:
    """Check every entry and checkpoint; exit 1 naming the first bad entry."""
    _, store = open_store(config_path)
    key = store.public_key
    report = verify_chain(store.audit_entries(), store.audit_checkpoints(), key)
    if as_json:
        print_json(report.describe() | {"checkpoint_signatures_checked": key is not None})
    elif report.ok:
        click.echo(f"audit trail intact: {report.entries} entries, {report.checkpoints} checkpoints")
        if key is None:
            click.echo("warning: no station key configured; checkpoint signatures were not checked", err=True)
    else:
        click.echo(f"audit trail BROKEN at entry {report.first_bad_seq}: {report.problem}")
    sys.exit(0 if report.ok else EXIT_REFUSED)


def _instant(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An ISO 8601 date-time with a zone, as the store writes times (UTC, milliseconds, `Z`), so that the store's
    text comparison orders it right."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date-time (e.g. 2026-11-23T00:00:00Z)") from None
    if moment.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no time zone; add Z for UTC or an offset like +01:00")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@audit.command()
@click.option(
    "--since", callback=_instant, help="Only entries at or after this ISO 8601 time with a zone (2026-11-23T00:00:00Z)"
)
@click.option("--out", type=click.Path(dir_okay=False), help="File to write (default: stdout); never an existing one")
@config_option
def export(since: str | None, out: str | None, config_path: str) -> None:
    """Write audit entries as JSON lines, oldest first."""
    if out is not None and Path(out).exists():
        raise click.BadParameter(f"{out} exists; export never overwrites a file", param_hint="--out")
    _, store = open_store(config_path)
    lines = (json.dumps(entry.export(), sort_keys=True) + "\n" for entry in store.audit_entries(since))
    if out is None:
        for line in lines:
            click.echo(line, nl=False)
        return
    write_atomically(Path(out), "".join(lines))
