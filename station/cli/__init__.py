"""The `reflash` command: one entry point, one subcommand group per area of the station."""

from __future__ import annotations

import click

from station.cli.audit import audit
from station.cli.catalog import catalog
from station.cli.demo import demo
from station.cli.jig import jig
from station.cli.orders import orders
from station.cli.run import run, status
from station.cli.sim import sim

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="reflash-station")
def main() -> None:
    """Re-flash GB smart-metering Communications Hubs under the SSC re-flash guidance."""


main.add_command(catalog)
main.add_command(demo)
main.add_command(orders)
main.add_command(audit)
main.add_command(sim)
main.add_command(run)
main.add_command(status)
main.add_command(jig)
