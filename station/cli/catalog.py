"""`reflash catalog ...`: keys, signed Upgrade Images, the signed approved-firmware catalog, and policy checks.

Command names, options and JSON keys here are a contract that scripts rely on; docs/firmware-images.md and
docs/catalog.md describe them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from firmware_catalog.hexcode import format_hex, parse_hex
from firmware_catalog.signature_scope import DEFAULT_SCOPE, SignatureScope
from station.cli.output import EXIT_INPUT, EXIT_REFUSED, console, fail, input_errors, print_json
from station.cli.station_options import state_dir_option

if TYPE_CHECKING:
    from firmware_catalog.hub import HubIdentity
    from firmware_catalog.image import UpgradeImage

# Each command imports what it uses when it runs (cryptography, construct, pydantic and the catalog cost a quarter
# of a second of CPU): `reflash catalog --help` and a mistyped option answer at once.

__all__ = ["catalog"]

AUTHORITY_ENV = "REFLASH_CATALOG_AUTHORITY"

F = TypeVar("F", bound=Callable[..., Any])


class HexCode(click.ParamType[int]):
    """A fixed-width hex code option (`--manufacturer 121D`, `--version ACDCACDC`)."""

    def __init__(self, digits: int) -> None:
        self.digits = digits
        self.name = f"{digits}-hex-digits"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_hex(str(value), self.digits, param.name if param and param.name else "value")
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def scope_option(help_text: str) -> Callable[[F], F]:
    """`--scope`: a signature scope by name (firmware_catalog/signature_scope.py, a module without imports)."""
    return click.option(
        "--scope",
        type=click.Choice([scope.value for scope in SignatureScope]),
        default=DEFAULT_SCOPE.value,
        show_default=True,
        help=help_text,
    )


@click.group()
def catalog() -> None:
    """Signing keys, Upgrade Images, the approved-firmware catalog and the re-flash policy."""


@catalog.command()
@click.option("--out", "prefix", required=True, type=click.Path(dir_okay=False), help="Writes PREFIX.key, PREFIX.pub")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (errors too)")
def keygen(prefix: str, as_json: bool) -> None:
    """Make an ECDSA P-256 key pair: PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub (SPKI PEM)."""
    from firmware_catalog.keys import fingerprint, generate_key, write_keypair

    for path in (Path(f"{prefix}.key"), Path(f"{prefix}.pub")):
        if path.exists():
            fail(f"{path} exists; refusing to overwrite a key", EXIT_INPUT, as_json)
    key = generate_key()
    try:
        private_path, public_path = write_keypair(key, prefix)
    except OSError as exc:
        fail(f"{exc.filename or prefix}: {exc.strerror}", EXIT_INPUT, as_json)
    if as_json:
        print_json(
            {
                "private_key": str(private_path),
                "public_key": str(public_path),
                "fingerprint": fingerprint(key.public_key()),
            }
        )
        return
    click.echo(f"wrote {private_path} (mode 0600) and {public_path}")
    click.echo(f"fingerprint {fingerprint(key.public_key())}")


@catalog.command("sign-image")
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False), help="Signing key (PKCS#8 PEM)")
@click.option("--manufacturer", required=True, type=HexCode(4), help="Manufacturer code, 4 hex digits")
@click.option("--image-type", required=True, type=HexCode(4), help="Image type (hub model), 4 hex digits")
@click.option("--version", "file_version", required=True, type=HexCode(8), help="Firmware version, 8 hex digits")
@click.option("--min-hw", required=True, type=HexCode(4), help="Minimum hardware version, 4 hex digits")
@click.option("--max-hw", required=True, type=HexCode(4), help="Maximum hardware version, 4 hex digits")
@click.option("--header-string", default="", help="OTA header string, at most 32 ASCII characters")
@click.option("--control", default=0, type=click.IntRange(0, 255), help="Control byte (CH force-replace flag)")
@scope_option("Which bytes the signature covers: the scope the catalog states for this key")
@click.argument("manufacturer_image", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Replace OUT if it exists (never done without it)")
@click.option("--json", "as_json", is_flag=True, help="The image's header as one JSON object (errors too)")
def sign_image(
    as_json: bool,
    key_path: str,
    manufacturer: int,
    image_type: int,
    file_version: int,
    min_hw: int,
    max_hw: int,
    header_string: str,
    control: int,
    scope: str,
    manufacturer_image: str,
    out: str,
    force: bool,
) -> None:
    """Wrap MANUFACTURER_IMAGE in a GBCS Upgrade Image header and sign it, writing OUT."""
    from firmware_catalog.image import build_signed_image, parse_image
    from firmware_catalog.keys import load_private_key
    from station.atomic_file import write_atomically

    if Path(out).exists() and not force:
        # A signed image the operator already has (or any file) is never replaced by a slip of the keyboard.
        fail(f"{out} exists; refusing to overwrite it (give --force to replace it)", EXIT_INPUT, as_json)
    with input_errors():
        key = load_private_key(key_path)
        try:
            data = build_signed_image(
                key,
                manufacturer=manufacturer,
                image_type=image_type,
                file_version=file_version,
                min_hardware_version=min_hw,
                max_hardware_version=max_hw,
                manufacturer_image=Path(manufacturer_image).read_bytes(),
                header_string=header_string,
                control=control,
                scope=SignatureScope(scope),
            )
        except (ValueError, UnicodeEncodeError) as exc:
            raise click.UsageError(str(exc)) from exc
        try:
            write_atomically(Path(out), data)
        except OSError as exc:
            fail(f"{exc.filename or out}: {exc.strerror}", EXIT_INPUT, as_json)
    if as_json:
        image = parse_image(data)
        print_json({"out": out, **image.describe()})
        return
    click.echo(f"wrote {out} ({len(data)} bytes, version {format_hex(file_version, 8)})")


@catalog.command()
@click.argument("image_path", metavar="IMAGE", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object")
def inspect(image_path: str, as_json: bool) -> None:
    """Show an Upgrade Image's header, sizes and Manufacturer Image hash."""
    from rich.table import Table

    from firmware_catalog.image import read_image
    from station.display_text import display_cell

    with input_errors():
        image = read_image(image_path)
    fields = image.describe()
    if as_json:
        print_json(fields)
        return
    table = Table(title=display_cell(image_path), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for name, value in fields.items():
        table.add_row(name, display_cell(value))  # the header string is the file's, not ours
    console().print(table)


@catalog.command()
@click.argument("image_path", metavar="IMAGE", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--key",
    "key_paths",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A public key (SPKI PEM); repeat to try several",
)
@scope_option("With --key: which bytes the signature covers (with --catalog, each key's scope is the catalog's)")
@click.option("--catalog", "catalog_dir", type=click.Path(file_okay=False), help="Use this catalog's trusted keys")
@click.option("--authority", envvar=AUTHORITY_ENV, type=click.Path(dir_okay=False), help="Catalog authority key")
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object")
def verify(
    image_path: str,
    key_paths: tuple[str, ...],
    scope: str,
    catalog_dir: str | None,
    authority: str | None,
    state_dir: str | None,
    as_json: bool,
) -> None:
    """Check IMAGE's signature: exit 0 when valid, 1 when not (with a reason code), 2 on bad input.

    With --key, valid means one of the keys verifies it. With --catalog, valid means a key that the catalog
    trusts for the image's manufacturer, and has not revoked, verifies it; the catalog is loaded under the
    rollback pin in the state folder (a refused catalog exits 1 with its code).
    """
    from firmware_catalog.errors import ImageFormatError
    from firmware_catalog.image import read_image
    from firmware_catalog.keys import fingerprint, load_public_key
    from firmware_catalog.reason import ReasonCode

    if not key_paths and not catalog_dir:
        raise click.UsageError("give --key PUB (one or more) or --catalog DIR")
    result: dict[str, Any] = {"image": image_path, "valid": False}
    try:
        image = read_image(image_path)
    except ImageFormatError as exc:
        result.update(reason=ReasonCode.MALFORMED_IMAGE.value, message=str(exc), field=exc.field, offset=exc.offset)
        _finish_verify(result, as_json)
        return
    result.update(manufacturer_image_sha256=image.manufacturer_image_sha256)
    with input_errors():
        keys = [load_public_key(path) for path in key_paths]
        if catalog_dir is not None:
            trusted = _verify_with_catalog(image, catalog_dir, authority, state_dir)
            result.update(trusted)
            _finish_verify(result, as_json)
            return
    stated = SignatureScope(scope)
    signer = next((key for key in keys if image.verify(key, stated)), None)
    if signer is None:
        keys_given = "any of the keys" if len(keys) > 1 else "the key"
        other = next((found[0] for key in keys if (found := image.scopes_signed_by(key))), None)
        hint = f" (it verifies over scope {other.value}: give --scope {other.value})" if other is not None else ""
        result.update(
            reason=ReasonCode.SIGNATURE_INVALID.value,
            message=f"the signature does not verify under {keys_given} given over scope {stated.value}{hint}",
        )
    else:
        result.update(valid=True, reason=ReasonCode.OK.value, message="signature valid", key=fingerprint(signer))
    _finish_verify(result, as_json)


def _verify_with_catalog(
    image: UpgradeImage, catalog_dir: str, authority: str | None, state_dir: str | None
) -> dict[str, Any]:
    from firmware_catalog.catalog import KeyStanding
    from firmware_catalog.errors import CatalogRefused
    from firmware_catalog.keys import load_public_key
    from firmware_catalog.reason import ReasonCode
    from station.pin_folder import PinFolder

    if authority is None:
        raise click.UsageError(f"--catalog needs the catalog authority's public key: --authority or ${AUTHORITY_ENV}")
    try:
        loaded = PinFolder.locate(state_dir).load(catalog_dir, load_public_key(authority), datetime.now(UTC))
    except CatalogRefused as exc:
        return {"reason": exc.code.value, "message": str(exc)}
    manufacturer = format_hex(image.manufacturer, 4)
    for fp in loaded.public_keys:
        if loaded.signed_by(image, fp):
            standing, why = loaded.key_standing(fp, manufacturer)
            if standing is KeyStanding.TRUSTED:
                return {"valid": True, "reason": ReasonCode.OK.value, "message": f"signed by {why}", "key": fp}
            code = ReasonCode.KEY_REVOKED if standing is KeyStanding.REVOKED else ReasonCode.UNTRUSTED_KEY
            return {"reason": code.value, "message": why, "key": fp}
    message = f"no key that catalog serial {loaded.serial} trusts for manufacturer {manufacturer} signs it"
    for fp, key in loaded.public_keys.items():
        found = image.scopes_signed_by(key)
        if found:
            # The key is listed, but the catalog states another scope for it: say so, the fix is the catalog's.
            stated = loaded.key_scopes[fp].value
            message += f" (key {fp[:16]} signs it over scope {found[0].value}; the catalog states {stated})"
            break
    return {"reason": ReasonCode.UNTRUSTED_KEY.value, "message": message}


def _finish_verify(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(result)
    else:
        status = "valid" if result["valid"] else "INVALID"
        click.echo(f"{result['image']}: {status} ({result['reason']}): {result['message']}")
    sys.exit(0 if result["valid"] else EXIT_REFUSED)


@catalog.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False), help="Catalog authority key")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Catalog folder to write")
@click.option("--base", type=click.Path(file_okay=False), help="Resolve key and image paths here (default: SOURCE's)")
@click.option("--json", "as_json", is_flag=True, help="One JSON object")
def build(source: str, key_path: str, out: str, base: str | None, as_json: bool) -> None:
    """Check SOURCE (TOML) against its images and keys, and write a signed catalog folder."""
    from firmware_catalog.catalog_source import build_catalog
    from firmware_catalog.keys import load_private_key

    with input_errors():
        report = build_catalog(source, load_private_key(key_path), out, datetime.now(UTC), base)
    if as_json:
        print_json(
            {"serial": report.serial, "out": str(report.out), "entries": report.entries, "warnings": report.warnings}
        )
        return
    click.echo(f"built catalog serial {report.serial} with {report.entries} entries in {report.out}")
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)


@catalog.command()
@click.option("--catalog", "catalog_dir", required=True, type=click.Path(file_okay=False), help="Catalog folder")
@click.option("--authority", envvar=AUTHORITY_ENV, required=True, type=click.Path(dir_okay=False), help="Authority key")
@click.option("--hub", "hub_json", required=True, help="The hub's identity as JSON, or @FILE")
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object")
def check(catalog_dir: str, authority: str, hub_json: str, state_dir: str | None, as_json: bool) -> None:
    """Print the policy's decision for one hub: exit 0 flash or nothing to do, 1 refused, 2 bad input.

    The catalog is loaded under the rollback pin in the state folder, which a newer catalog raises.
    """
    from firmware_catalog.errors import CatalogRefused
    from firmware_catalog.keys import load_public_key
    from firmware_catalog.policy import decide
    from station.pin_folder import PinFolder

    hub = _read_hub(hub_json)
    with input_errors():
        authority_key = load_public_key(authority)
        try:
            loaded = PinFolder.locate(state_dir).load(catalog_dir, authority_key, datetime.now(UTC))
        except CatalogRefused as exc:
            _finish_check(
                {"decision": "refuse", "code": exc.code.value, "message": str(exc), "catalog_serial": None},
                as_json,
            )
            return
    decision = decide(hub, loaded, datetime.now(UTC))
    _finish_check(decision.describe(), as_json)


def _read_hub(text: str) -> HubIdentity:
    from pydantic import ValidationError

    from firmware_catalog.hub import HubIdentity

    where = "--hub"
    if text.startswith("@"):
        where = text[1:]
        try:
            text = Path(where).read_text()
        except OSError as exc:
            raise click.BadParameter(f"{where}: {exc.strerror}", param_hint="--hub") from exc
    try:
        return HubIdentity.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"{where}: line {exc.lineno} column {exc.colno}: {exc.msg}", param_hint="--hub"
        ) from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise click.BadParameter(f"{where}: {field}: {first['msg']}", param_hint="--hub") from exc


def _finish_check(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(result)
    else:
        target = result.get("target") or {}
        arrow = f" -> {target['firmware_version']}" if result["decision"] == "flash" else ""
        click.echo(f"{result['decision']}{arrow}: {result['code']}: {result['message']}")
    sys.exit(EXIT_REFUSED if result["decision"] == "refuse" else 0)
