"""`reflash orders ...`: import DCC requests, scan hubs in and out, close with the reconciliation report."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from firmware_catalog.eui64 import normalise_eui64
from station.cli.output import EXIT_INPUT, EXIT_REFUSED, console, fail, print_json, print_json_line
from station.cli.station_options import config_option, open_store

# Each command imports what it uses when it runs: `reflash orders --help` (and a scan-in) need not load the
# reporter, the reconciliation or rich's tables.
if TYPE_CHECKING:
    from station.store import Store

__all__ = ["orders"]


@click.group()
def orders() -> None:
    """Re-flash orders: import, scan in and out, report, close."""


def _json_option(func: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="JSON for scripts (errors too)")(func)


@orders.command("import")
@click.argument("path", metavar="FILE", type=click.Path(dir_okay=False))
@_json_option
@config_option
def import_(path: str, as_json: bool, config_path: str) -> None:
    """Import a DCC re-flash request (CSV or JSON). All or nothing: every problem is listed by line."""
    from station.orders import OrderImportError, read_order_file
    from station.store import OrderConflict

    _, store = open_store(config_path, create=True)
    try:
        request = read_order_file(path)
        store.import_order(request)
    except (OrderImportError, OrderConflict) as exc:
        fail(str(exc), EXIT_INPUT, as_json, source=exc.source, problems=exc.problems)
    if as_json:
        print_json(
            {"order_ref": request.ref, "kind": request.kind, "region": request.region, "hubs": len(request.hubs)}
        )
        return
    click.echo(f"imported order {request.ref} ({request.kind}, {request.region}): {len(request.hubs)} hubs")


def _ids(ids: tuple[str, ...]) -> Iterator[str]:
    """IDs from the arguments, or one per line from stdin as each arrives: a barcode scanner types the ID and Enter,
    and the operator sees the answer before scanning the next hub."""
    if ids:
        yield from ids
        return
    for line in sys.stdin:
        if line.strip():
            yield line.strip()


def _scan(
    store: Store,
    order_ref: str,
    ids: tuple[str, ...],
    action: Callable[[str], tuple[str, str]],
    as_json: bool,
) -> None:
    """Apply a custody action to each scanned ID and answer each one as it comes: a line of text, or with --json
    one JSON object per line (`id`, `chf_id`, `result`, `message`). Exit 2 if any ID was not an ID (a misread
    barcode), else 1 if any was refused, else 0. An order that does not exist is said once, before any scan."""
    from station.store import StoreError

    try:
        store.order(order_ref)
    except StoreError as exc:
        fail(str(exc), EXIT_INPUT, as_json)
    misread = refused = False
    for scanned in _ids(ids):
        chf_id: str | None = None
        try:
            chf_id = normalise_eui64(scanned)
            result, message = action(chf_id)
        except ValueError as exc:
            result, message, misread = "misread", str(exc), True
        except StoreError as exc:
            result, message, refused = "refused", str(exc), True
        if as_json:
            print_json_line({"id": scanned, "chf_id": chf_id, "result": result, "message": message})
        elif result in ("misread", "refused"):
            click.echo(f"{scanned}: {'error' if result == 'misread' else 'REFUSED'}: {message}", err=True)
        else:
            click.echo(f"{scanned}: {message}")
    sys.exit(EXIT_INPUT if misread else EXIT_REFUSED if refused else 0)


@orders.command()
@click.argument("order_ref", metavar="ORDER")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@_json_option
@config_option
def receive(order_ref: str, ids: tuple[str, ...], as_json: bool, config_path: str) -> None:
    """Scan hubs in (IDs as arguments, or one per line on stdin)."""
    _, store = open_store(config_path)

    def receive_one(chf_id: str) -> tuple[str, str]:
        if store.receive(order_ref, chf_id):
            return "received", "received"
        return "received_unasked", "received UNASKED: not in this order; hold it"

    _scan(store, order_ref, ids, receive_one, as_json)


@orders.command()
@click.argument("order_ref", metavar="ORDER")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@_json_option
@config_option
def dispatch(order_ref: str, ids: tuple[str, ...], as_json: bool, config_path: str) -> None:
    """Scan hubs out; only hubs with a final outcome (or that arrived unasked) may leave."""
    _, store = open_store(config_path)

    def dispatch_one(chf_id: str) -> tuple[str, str]:
        return "dispatched", f"dispatched ({store.dispatch(order_ref, chf_id)})"

    _scan(store, order_ref, ids, dispatch_one, as_json)


@orders.command()
@click.argument("order_ref", metavar="ORDER")
@click.option("--out", type=click.Path(file_okay=False), help="Folder for ORDER.json and ORDER.csv (default: reports/)")
@_json_option
@config_option
def close(order_ref: str, out: str | None, as_json: bool, config_path: str) -> None:
    """Close an order, write its reconciliation report as JSON and CSV, and publish its summary."""
    from station.messages import order_summary
    from station.reconciliation import order_report, write_report
    from station.reporter import publish_outbox
    from station.status_view import daemon_running
    from station.store import StoreError

    config, store = open_store(config_path)
    section = config.station
    try:
        report = order_report(store, order_ref)

        def summary(message_id: str, closed_at: str) -> dict[str, Any]:
            # Closing changes the order's state, not its hubs: the report just made is the summary's source.
            return order_summary(report, message_id, station=section.id, region=section.region, closed_at=closed_at)

        store.close_order(order_ref, report["totals"], summary)
    except StoreError as exc:
        fail(str(exc), EXIT_INPUT, as_json)
    folder = Path(out) if out else config.resolve(Path("reports"))
    json_path, csv_path = write_report(order_report(store, order_ref), folder)
    # Only the daemon speaks for the station: while it runs, the summary waits in the outbox for its reporter.
    if config.mqtt is None:
        delivery = None
    elif daemon_running(config):
        delivery = "queued"
    else:
        delivery = asyncio.run(publish_outbox(store, config, within_s=10))
    if as_json:
        print_json(
            {"order_ref": order_ref, "report_json": str(json_path), "report_csv": str(csv_path),
             "summary_published": delivery == "published" if delivery is not None else None,
             "summary_delivery": delivery, "totals": report["totals"]}
        )  # fmt: skip
        return
    click.echo(f"closed order {order_ref}; report: {json_path} {csv_path}")
    if delivery == "published":
        click.echo("order summary published")
    elif delivery == "queued":
        click.echo("order summary queued: the running station's reporter publishes it")
    elif delivery is not None and delivery.startswith("refused"):
        click.echo(f"order summary {delivery}; it waits in the outbox for the station's reporter", err=True)
    elif delivery is not None:
        click.echo("broker not reachable: the order summary waits in the outbox for the station's reporter")


@orders.command()
@click.argument("order_ref", metavar="ORDER")
@click.option("--json", "as_json", is_flag=True)
@click.option("--csv", "as_csv", is_flag=True)
@config_option
def report(order_ref: str, as_json: bool, as_csv: bool, config_path: str) -> None:
    """Print an order's reconciliation report now (open or closed)."""
    from rich.table import Table

    from station.reconciliation import order_report, report_csv
    from station.store import StoreError

    _, store = open_store(config_path)
    try:
        data = order_report(store, order_ref)
    except StoreError as exc:
        fail(str(exc), EXIT_INPUT, as_json)
    if as_json:
        print_json(data)
        return
    if as_csv:
        click.echo(report_csv(data), nl=False)
        return
    table = Table(title=f"Order {order_ref} ({data['state']}, {data['kind']}, {data['region']})")
    for column in ("CHF ID", "status", "outcome", "reason", "before", "after", "charge"):
        table.add_column(column, no_wrap=True)
    for hub in data["hubs"] + data["unasked"]:
        table.add_row(
            hub["chf_id"],
            hub["status"] + ("" if hub in data["hubs"] else " (unasked)"),
            hub["outcome"] or "",
            hub["reason"] or "",
            hub["firmware_before"] or "",
            hub["firmware_after"] or "",
            hub["charge"] or "",
        )
    totals = data["totals"]
    out = console()
    out.print(table)
    out.print(
        f"{totals['processed']}/{totals['named']} processed, {len(data['never_received'])} never received, "
        f"{len(data['unasked'])} unasked; charges {totals['charge']} {totals['currency'] or ''}"
    )


@orders.command("list")
@click.option("--json", "as_json", is_flag=True)
@config_option
def list_(as_json: bool, config_path: str) -> None:
    """List orders with their state and progress."""
    from rich.table import Table

    _, store = open_store(config_path)
    items: list[dict[str, Any]] = [
        {"ref": p.order.ref, "kind": p.order.kind.value, "requesting_party": p.order.requesting_party,
         "region": p.order.region, "state": p.order.state.value, "imported_at": p.order.imported_at,
         "closed_at": p.order.closed_at, "hubs": p.hubs, "processed": p.processed}
        for p in store.order_book.progress()
    ]  # fmt: skip
    if as_json:
        print_json({"orders": items})
        return
    table = Table(title="Orders")
    for column in ("order", "kind", "party", "region", "state", "hubs", "processed", "imported"):
        table.add_column(column, no_wrap=True)
    for item in items:
        table.add_row(
            item["ref"], item["kind"], item["requesting_party"] or "", item["region"], item["state"],
            str(item["hubs"]), str(item["processed"]), item["imported_at"],
        )  # fmt: skip
    console().print(table)
