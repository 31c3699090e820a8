"""`reflash audit ...`: verify the hash chain and its signed checkpoints (and, with `--anchors`, the chain against
the DSP's anchors); export entries as JSON lines."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from firmware_catalog.keys import fingerprint
from station.anchors import AnchorReport, AnchorsError, AnchorsUnreachable, Finding, check_anchors, load_anchors
from station.atomic_file import write_atomically
from station.audit import verify_chain
from station.cli.output import EXIT_INPUT, EXIT_REFUSED, print_json
from station.cli.station_options import config_option, open_store

__all__ = ["audit"]


@click.group()
def audit() -> None:
    """The tamper-evident audit trail."""


@audit.command()
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--anchors",
    "anchors_at",
    metavar="FILE|URL",
    help="Also check the chain against the DSP's anchors: a file a DSP bridge exported, or an http(s) URL serving it",
)
@config_option
def verify(as_json: bool, anchors_at: str | None, config_path: str) -> None:
    """Check every entry and checkpoint; exit 1 naming the first bad entry."""
    config, store = open_store(config_path)
    key = store.public_key
    anchored: AnchorReport | None = None
    if anchors_at is not None:
        try:
            held = load_anchors(anchors_at)
        except AnchorsError as exc:
            click.echo(f"error: --anchors {exc}", err=True)
            sys.exit(EXIT_REFUSED if isinstance(exc, AnchorsUnreachable) else EXIT_INPUT)
        station = config.station.id
        keys = {fingerprint(key): key} if key is not None else {}
        anchored = check_anchors(station, store.audit_entries(), held.get(station, []), keys)
        if not anchored.anchors:
            others = ", ".join(sorted(held)) or "none"
            anchored.findings.append(Finding(0, f"the anchors hold nothing of station {station} (stations: {others})"))
    report = verify_chain(store.audit_entries(), store.audit_checkpoints(), key)
    ok = report.ok and (anchored is None or anchored.ok)
    if as_json:
        described = report.describe() | {"checkpoint_signatures_checked": key is not None}
        if anchored is not None:
            described |= {"ok": ok, "anchors": anchored.describe()}
        print_json(described)
        sys.exit(0 if ok else EXIT_REFUSED)
    if report.ok:
        click.echo(f"audit trail intact: {report.entries} entries, {report.checkpoints} checkpoints")
        if key is None:
            click.echo("warning: no station key configured; checkpoint signatures were not checked", err=True)
    else:
        click.echo(f"audit trail BROKEN at entry {report.first_bad_seq}: {report.problem}")
    if anchored is not None:
        for finding in anchored.findings:
            click.echo(f"anchors: {finding.problem}")
        if anchored.ok:
            click.echo(
                f"anchors: the chain holds all {anchored.anchors} of the DSP's anchors, up to entry "
                f"{anchored.anchored_to}; {anchored.unanchored} entries after it are not anchored yet"
            )
    sys.exit(0 if ok else EXIT_REFUSED)


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
