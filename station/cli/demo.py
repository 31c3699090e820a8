"""`reflash demo`: the README's first command. Today it shows the catalog and the policy deciding for a set of
example hubs; later issues grow it into a whole simulated bench."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from firmware_catalog.errors import CatalogError
from station.cli.output import EXIT_INPUT, console, print_json
from station.demo import run_catalog_demo

__all__ = ["demo"]

_STYLE = {"flash": "green", "none": "cyan", "refuse": "red"}


@click.command()
@click.option("--workdir", default="work/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the decisions as JSON")
def demo(workdir: str, as_json: bool) -> None:
    """Generate keys, images and a signed catalog, then show the policy's decision for each example hub.

    Exits 0 only when every decision is the one the scenario (config/demo.toml) expects.
    """
    try:
        results = run_catalog_demo(Path(workdir))
    except (CatalogError, FileExistsError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INPUT)
    ok = all(r.as_expected for r in results)
    if as_json:
        print_json({"workdir": workdir, "as_expected": ok, "hubs": [r.describe() for r in results]})
    else:
        table = Table(title=f"Re-flash decisions (catalog built in {workdir}/catalog)")
        for column in ("#", "mfr/model", "hw", "firmware", "decision", "code", "target", "expected"):
            table.add_column(column, no_wrap=True)
        for number, r in enumerate(results, 1):
            hub, decision = r.hub.identity, r.decision.describe()
            target = decision["target"]["firmware_version"] if decision["target"] else ""
            style = _STYLE[decision["decision"]]
            table.add_row(
                str(number),
                f"{hub.manufacturer}/{hub.model}",
                hub.hardware_version,
                hub.firmware_version,
                f"[{style}]{decision['decision']}[/]",
                decision["code"],
                target,
                "yes" if r.as_expected else f"[red]NO: {r.hub.expect.value}[/]",
            )
        out = console()
        out.print(table)
        for number, r in enumerate(results, 1):
            out.print(f"{number:>2}. {r.hub.name}: {r.decision.message}", soft_wrap=True)
    sys.exit(0 if ok else 1)
