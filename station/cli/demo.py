"""`reflash demo`: the README's first command. The whole station on a simulated bench, with nothing to configure."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click
from rich import box
from rich.table import Table

from firmware_catalog.errors import CatalogError
from station.cli.output import EXIT_INPUT, console, print_json
from station.mosquitto import MosquittoMissing
from station.outcome import Outcome
from station.showcase import run_demo
from station.status_view import OUTCOME_STYLE

__all__ = ["demo"]


@click.command()
@click.option("--workdir", default="work/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--slots", type=click.IntRange(1, 256), help="Bench size (default: the scenario's hubs)")
@click.option("--json", "as_json", is_flag=True, help="Print the final table as JSON")
@click.option("--live/--no-live", default=None, help="Live bench table (default: when stdout is a terminal)")
def demo(workdir: str, slots: int | None, as_json: bool, live: bool | None) -> None:
    """Keys, images, a signed catalog, a private Mosquitto, a simulated bench, the station and the DSP bridge:
    run an order and show each hub's outcome beside the SMI.

    Exits 0 only when every hub has the outcome config/demo.toml expects and the SMI agrees.
    """
    try:
        results = asyncio.run(run_demo(Path(workdir), slots, live=False if as_json else live, quiet=as_json))
    except (CatalogError, FileExistsError, MosquittoMissing) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INPUT)
    ok = all(r.as_expected for r in results)
    if as_json:
        print_json({"workdir": workdir, "as_expected": ok, "hubs": [r.describe() for r in results]})
        sys.exit(0 if ok else 1)
    out = console()
    # Narrow terminals: no borders, the end of each CHF ID (the demo's IDs share their prefix), one SMI column when
    # the CHF and GPF rows agree, and a reason only where it says more than the outcome.
    compact = out.width < 120
    table = Table(
        title="Demo bench: each hub's outcome, and the firmware the DSP's SMI now holds",
        box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD,
        collapse_padding=compact,
        pad_edge=not compact,
        width=out.width if compact else None,
    )
    columns = ("slot", "CHF ID", "outcome", "reason", "firmware", *(("SMI",) if compact else ("SMI CHF", "SMI GPF")))
    for column in (*columns, "ok"):
        # In a narrow table only the reason gives way: every other column keeps its width.
        flexible = compact and column == "reason"
        table.add_column(column, no_wrap=True, overflow="ellipsis", ratio=1 if flexible else None)
    for n, r in enumerate(results, 1):
        # The demo's expected outcomes in their colours; anything else (a failure, a hub in quarantine) in red.
        style = OUTCOME_STYLE[Outcome(r.outcome)] if r.outcome and r.outcome in Outcome.__members__ else "red"
        changed = r.firmware_after and r.firmware_after != r.firmware_before
        firmware = f"{r.firmware_before}{'→' if compact else '->'}{r.firmware_after}" if changed else r.firmware_before
        smi = [r.smi_chf_firmware or "-", r.smi_gpf_firmware or "-"]
        if compact:
            smi = [smi[0] if smi[0] == smi[1] else "/".join(smi)]
        table.add_row(
            f"S{n:02d}", "…" + r.chf_id[-8:] if compact else r.chf_id, f"[{style}]{r.outcome}[/]",
            "" if compact and r.reason == r.outcome else r.reason or "", firmware, *smi,
            "yes" if r.as_expected else "[red]NO[/]",
        )  # fmt: skip
    out.print(table)
    for n, r in enumerate(results, 1):
        wrong = "" if r.as_expected else f"  [red]expected {r.hub.expect[0]} {r.hub.expect[1]}[/]"
        out.print(f"  S{n:02d} {r.hub.name}{wrong}")
    out.print(
        f"{sum(r.as_expected for r in results)}/{len(results)} hubs as expected. Files: {workdir} "
        f"(station.toml, state/station.db, smi.db, order.csv). Try: reflash orders report {'DCC-DEMO-0001'} "
        f"--config {workdir}/station.toml; reflash audit verify --config {workdir}/station.toml"
    )
    sys.exit(0 if ok else 1)
