"""`reflash sim ...`: the simulated world the station is tested and demonstrated against."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click
from rich.table import Table

from simulators.dsp_bridge import DspBridge, SmiStore
from station.cli.output import console, print_json

__all__ = ["sim"]


@click.group()
def sim() -> None:
    """Simulated hubs, jigs and the DSP update bridge."""


@sim.command("dsp-bridge")
@click.option("--broker", help="mqtt://host:port of the broker (not needed with --show)")
@click.option("--db", "db", required=True, type=click.Path(dir_okay=False), help="The bridge's SMI database")
@click.option("--name", default="dsp-bridge-1", show_default=True, help="This bridge's name (client id, acks)")
@click.option("--group", default="dsp-bridge", show_default=True, help="Shared-subscription group")
@click.option("--show", is_flag=True, help="Print the SMI view and exit")
@click.option("--json", "as_json", is_flag=True, help="With --show: JSON")
def dsp_bridge(broker: str | None, db: str, name: str, group: str, show: bool, as_json: bool) -> None:
    """Apply hub results to an SMI table exactly once per message_id, and ack each one."""
    if show:
        smi = SmiStore(Path(db))
        devices, rejected = smi.devices(), smi.rejected()
        smi.close()
        if as_json:
            print_json({"devices": devices, "rejected": rejected})
            return
        table = Table(title=f"SMI ({db})")
        for column in ("device", "type", "CHF", "manufacturer", "model", "firmware", "updated", "message"):
            table.add_column(column, no_wrap=True)
        for d in devices:
            table.add_row(
                d["device_id"], d["device_type"], d["chf_id"], d["manufacturer"] or "", d["model"] or "",
                d["firmware_version"] or "", d["updated_at"], d["message_id"][:8],
            )  # fmt: skip
        console().print(table)
        if rejected:
            console().print(f"{len(rejected)} rejected message(s) kept for inspection")
        return
    if not broker:
        raise click.UsageError("--broker is required unless --show")
    try:
        bridge = DspBridge(broker, Path(db), name=name, group=group)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, bridge.stop)
        click.echo(f"dsp-bridge {name}: serving {broker}, SMI in {db}", err=True)
        await bridge.run()

    asyncio.run(serve())
