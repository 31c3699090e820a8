"""`reflash jig ...`: one jig, one hub, from the command line, through the same policy as the station."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from station.cli.output import EXIT_INPUT, EXIT_REFUSED, print_json
from station.cli.station_options import state_dir_option
from station.display_text import display_text

if TYPE_CHECKING:
    from rich.progress import Progress

    from drivers.jig_driver import JigDriver
    from firmware_catalog.hub import HubIdentity
    from station.flash import FlashPhase

# Each command imports what it uses when it runs (the drivers, the catalog, the flash sequence): `reflash jig --help`
# answers at once.

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
    from drivers.transport_url import TransportUrlError
    from drivers.url_jig import UrlJig

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
    from drivers.errors import MaintenancePortError

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


class _ProgressBar:
    """What `reflash jig flash` shows of the flash (station/flash.py): the phase and a progress bar for the
    transfer; nothing is recorded (this command keeps no store)."""

    def __init__(self, bar: Progress, chf_id: str | None) -> None:
        self.bar, self.chf_id = bar, chf_id
        self.task = bar.add_task(f"{chf_id}", total=None)

    def flashing(self, target: str, image_sha256: str, upgrade_image_sha256: str, size: int) -> None:
        self.bar.update(self.task, description=f"{self.chf_id} -> {target}", total=size)

    def phase(self, phase: FlashPhase, target: str, size: int) -> None:
        self.bar.update(self.task, description=f"{self.chf_id} -> {target}: {phase.value}")

    def progress(self, done: int, total: int) -> None:
        self.bar.update(self.task, completed=done, total=total)

    def attempt_started(self, what: str) -> int:
        return 0

    def attempt_ended(self, number: int, result: str, detail: str, data_bytes: int) -> None:
        if result != "ok" and not self.bar.disable:  # with --json, stdout is the one JSON object
            click.echo(display_text(f"transfer attempt: {result}: {detail}"), err=True)

    def event(self, kind: str, **data: Any) -> None:
        pass


async def _flash(
    driver: JigDriver, catalog_dir: str, authority: str, state_dir: str | None, show: bool
) -> dict[str, Any]:
    """The policy's decision for the hub on the jig, then the station's own flash sequence (station/flash.py): the
    same steps, proofs and deadlines as `reflash run`, and the same outcomes and reason codes."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    from drivers.errors import HubSwapped
    from drivers.jig_driver import LINK_FAILURES
    from firmware_catalog.errors import CatalogRefused
    from firmware_catalog.keys import load_public_key
    from firmware_catalog.policy import decide
    from firmware_catalog.reason import PolicyEnd, policy_end
    from station.config import JobSettings
    from station.flash import flash_image
    from station.pin_folder import PinFolder

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
        end = policy_end(decision.code)  # how a refusal ends is data beside its rule, as in the station
        if end is PolicyEnd.ALREADY_CURRENT:
            return result | {"outcome": "ALREADY_CURRENT", "firmware_after": identity.firmware_version}
        if end is not PolicyEnd.FLASHED:
            return result | {"outcome": "REFUSED" if end is PolicyEnd.HELD else end.value}
        assert decision.image is not None
        with Progress(
            "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn(), disable=not show,
        ) as bar:  # fmt: skip
            try:
                ending = await flash_image(driver, decision.image, JobSettings(), _ProgressBar(bar, identity.chf_id))
            except HubSwapped as exc:
                return result | {"outcome": "FAILED", "reason": "HUB_SWAPPED", "message": str(exc)}
            except LINK_FAILURES as exc:
                return result | {"outcome": "FAILED", "reason": "LINK_FAILED", "message": str(exc)}
        return result | {
            "outcome": ending.outcome.value,
            "reason": ending.reason,
            "message": ending.detail,
            "firmware_after": ending.firmware_after,
            "hub_sha256": ending.hub_sha256,
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
    from drivers.errors import MaintenancePortError
    from firmware_catalog.errors import CatalogError
    from station.pin_folder import PinFileError

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
