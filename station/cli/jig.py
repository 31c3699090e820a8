"""`reflash jig ...`: one jig, one hub, from the command line, through the same policy as the station."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

from drivers.errors import HubRefused, HubSwapped, LinkError, MaintenancePortError
from drivers.jig import flash
from drivers.jig_driver import JigDriver
from drivers.transport_url import TransportUrlError
from drivers.url_jig import UrlJig
from firmware_catalog.errors import CatalogError, CatalogRefused
from firmware_catalog.hub import HubIdentity
from firmware_catalog.keys import load_public_key
from firmware_catalog.policy import decide
from firmware_catalog.reason import ReasonCode
from station.cli.output import EXIT_INPUT, EXIT_REFUSED, print_json
from station.cli.station_options import state_dir_option
from station.display_text import display_text
from station.pin_folder import PinFileError, PinFolder

__all__ = ["jig"]

IDENTIFY_KEYS = (
    "chf_id",
    "gpf_id",
    "manufacturer",
    "model",
    "hardware_version",
    "firmware_version",
    "han_variant",
    "chts_version",
    "serial",
)


@click.group()
def jig() -> None:
    """Talk to one jig: identify the hub on it, or flash it."""


def _driver(url: str, baud: int | None) -> JigDriver:
    try:
        return UrlJig.from_config({"url": url, **({"baud": baud} if baud else {})})
    except (TransportUrlError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="URL") from exc


async def _identify(driver: JigDriver) -> HubIdentity:
    try:
        return await driver.identify()
    finally:
        await driver.close()


@jig.command()
@click.argument("url")
@click.option("--json", "as_json", is_flag=True)
def identify(url: str, as_json: bool) -> None:
    """Identify the hub on the jig at URL (a serial device, tcp://HOST:PORT, usb://VID:PID?serial=...)."""
    try:
        identity = asyncio.run(_identify(_driver(url, None)))
    except (MaintenancePortError, OSError, LookupError) as exc:  # LookupError: no such USB jig
        click.echo(f"error: {exc}" if str(exc).startswith(url) else f"error: {url}: {exc}", err=True)
        sys.exit(EXIT_REFUSED)
    fields = identity.model_dump()
    if as_json:
        print_json({key: fields.get(key) for key in IDENTIFY_KEYS} | {"staged_version": fields.get("staged_version")})
        return
    for key in IDENTIFY_KEYS:
        click.echo(f"{key:>17}: {display_text(fields.get(key)) or '-'}")


async def _flash(
    driver: JigDriver, catalog_dir: str, authority: str, state_dir: str | None, show: bool
) -> dict[str, Any]:
    now = datetime.now(UTC)
    try:
        catalog = PinFolder.locate(state_dir).load(catalog_dir, load_public_key(authority), now)
    except CatalogRefused as exc:
        return {"outcome": "REFUSED", "reason": exc.code.value, "message": str(exc)}
    try:
        identity = await driver.identify()
        driver.expect(identity)  # the decision is for this hub: another one on the jig later is HubSwapped
        result: dict[str, Any] = {"chf_id": identity.chf_id, "firmware_before": identity.firmware_version}
        decision = decide(identity, catalog, now)
        result |= {"reason": decision.code.value, "message": decision.message}
        if decision.code is ReasonCode.ALREADY_CURRENT:
            return result | {"outcome": "ALREADY_CURRENT", "firmware_after": identity.firmware_version}
        if not decision.flash:
            outcome = "SCRAP" if decision.code is ReasonCode.TARGET_PAST_IVP else "REFUSED"
            return result | {"outcome": outcome}
        assert decision.image is not None
        with Progress(
            "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn(), disable=not show,
        ) as bar:  # fmt: skip
            task = bar.add_task(f"{identity.chf_id} -> {decision.entry.firmware_version if decision.entry else ''}")

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            try:
                flashed = await flash(driver, decision.image, progress)
            except (HubRefused, HubSwapped) as exc:
                return result | {"outcome": "FAILED", "reason": type(exc).__name__, "message": str(exc)}
            except LinkError as exc:
                return result | {"outcome": "FAILED", "reason": "LINK_RETRIES_EXHAUSTED", "message": str(exc)}
        return result | {
            "outcome": "REFLASHED",
            "reason": "REFLASHED",
            "firmware_after": flashed.version.running_version,
            "hub_sha256": flashed.verification.sha256,
        }
    finally:
        await driver.close()


@jig.command("flash")
@click.argument("url")
@click.option("--catalog", "catalog_dir", required=True, type=click.Path(file_okay=False), help="Catalog folder")
@click.option("--authority", envvar="REFLASH_CATALOG_AUTHORITY", required=True, type=click.Path(dir_okay=False))
@click.option("--baud", type=int, help="Switch to this rate after identify (serial jigs)")
@state_dir_option
@click.option("--json", "as_json", is_flag=True)
def flash_command(
    url: str, catalog_dir: str, authority: str, baud: int | None, state_dir: str | None, as_json: bool
) -> None:
    """Flash the hub on the jig at URL with what the catalog's policy decides: no bypass, no override.

    Exit 0 when the hub runs the target (or already did), 1 when refused or failed, 2 on bad input.
    """
    try:
        result = asyncio.run(_flash(_driver(url, baud), catalog_dir, authority, state_dir, show=not as_json))
    except (CatalogError, PinFileError, OSError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INPUT)
    except MaintenancePortError as exc:
        click.echo(f"error: {exc}" if str(exc).startswith(url) else f"error: {url}: {exc}", err=True)
        sys.exit(EXIT_REFUSED)
    if as_json:
        print_json(result)
    else:
        click.echo(display_text(f"{result['outcome']} ({result['reason']}): {result.get('message', '')}"))
    sys.exit(0 if result["outcome"] in ("REFLASHED", "ALREADY_CURRENT") else EXIT_REFUSED)
