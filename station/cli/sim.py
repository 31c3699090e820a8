"""`reflash sim ...`: the simulated world the station is tested and demonstrated against."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from station.cli.output import EXIT_INPUT, console, print_json, print_json_line

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

    from firmware_catalog.hub import HubIdentity
    from simulators.hub import HubOptions
    from simulators.link import LinkSettings

# Each command imports the simulators when it runs: `reflash sim --help` answers at once.

__all__ = ["sim"]


@click.group()
def sim() -> None:
    """Simulated hubs, jigs and the DSP update bridge."""


@sim.command("dsp-bridge")
@click.option("--broker", help="mqtt://host:port of the broker (not needed with --show)")
@click.option("--db", "db", required=True, type=click.Path(dir_okay=False), help="The bridge's SMI database")
@click.option("--name", default="dsp-bridge-1", show_default=True, help="This bridge's name (client id, acks)")
@click.option("--group", default="dsp-bridge", show_default=True, help="Shared-subscription group")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False), help="mqtts://: the broker's CA (PEM)")
@click.option("--cert", type=click.Path(exists=True, dir_okay=False), help="mqtts://: this bridge's certificate")
@click.option("--key", type=click.Path(exists=True, dir_okay=False), help="mqtts://: its private key (PEM)")
@click.option("--show", is_flag=True, help="Print the SMI view and exit")
@click.option("--json", "as_json", is_flag=True, help="With --show: JSON")
@click.option(
    "--anchors-out",
    type=click.Path(dir_okay=False),
    help="Write the audit anchors held (every station's, or --station's) to this JSON file and exit",
)
@click.option("--station", help="With --anchors-out: only this station's anchors")
@click.option("--anchors-listen", help="While running, serve GET /anchors[?station=ID] over HTTP on HOST:PORT")
def dsp_bridge(
    broker: str | None,
    db: str,
    name: str,
    group: str,
    ca: str | None,
    cert: str | None,
    key: str | None,
    show: bool,
    as_json: bool,
    anchors_out: str | None,
    station: str | None,
    anchors_listen: str | None,
) -> None:
    """Apply hub results to an SMI table exactly once per message_id, and ack each one."""
    from rich.table import Table

    from simulators.dsp_bridge import AnchorServer, DspBridge, SmiStore, SmiStoreError, anchors_document

    if anchors_out and (Path(anchors_out).is_dir() or not Path(anchors_out).parent.is_dir()):
        why = "is a folder" if Path(anchors_out).is_dir() else "its folder does not exist"
        click.echo(f"error: --anchors-out {anchors_out}: {why}", err=True)
        sys.exit(EXIT_INPUT)
    if (show or anchors_out) and not Path(db).is_file():  # reading a bridge's database never makes an empty one
        click.echo(f"error: {db}: no SMI database there", err=True)
        sys.exit(EXIT_INPUT)
    if anchors_out:
        from station.atomic_file import write_atomically

        try:
            smi = SmiStore(Path(db))
        except SmiStoreError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_INPUT)
        anchors = smi.anchors(station)
        smi.close()
        write_atomically(Path(anchors_out), json.dumps(anchors_document(anchors, name), indent=1) + "\n")
        click.echo(f"{len(anchors)} anchor(s) written to {anchors_out}", err=True)
        return
    listen = _host_port(anchors_listen, "--anchors-listen") if anchors_listen else None
    if show:
        try:
            smi = SmiStore(Path(db))
        except SmiStoreError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_INPUT)
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
    tls_context = None
    if key and not cert:
        raise click.UsageError("--key needs --cert (the certificate it belongs to)")
    if ca or cert:
        # A central broker (config/fleet/) knows a DSP bridge by its client certificate's common name.
        import ssl

        try:
            tls_context = ssl.create_default_context(cafile=ca)
        except OSError as exc:  # ssl.SSLError is one: "[X509] PEM lib" names no file
            raise click.UsageError(f"--ca {ca}: {exc}") from exc
        if cert:
            try:
                tls_context.load_cert_chain(cert, key)
            except OSError as exc:
                raise click.UsageError(f"--cert {cert}{f' (--key {key})' if key else ''}: {exc}") from exc
    try:
        bridge = DspBridge(broker, Path(db), name=name, group=group, tls_context=tls_context)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    except SmiStoreError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INPUT)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, bridge.stop)
        click.echo(f"dsp-bridge {name}: serving {broker}, SMI in {db}", err=True)
        if listen is None:
            await bridge.run()
            return
        ready: asyncio.Future[int] = loop.create_future()
        http = asyncio.create_task(AnchorServer(bridge.smi, name).serve(*listen, ready))
        first: set[asyncio.Future[Any]] = {ready, http}
        await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        if http.done():
            http.result()  # the address could not be bound: an OSError naming why
        click.echo(f"anchors: http://{listen[0]}:{ready.result()}/anchors", err=True)
        try:
            await bridge.run()
        finally:
            http.cancel()
            await asyncio.gather(http, return_exceptions=True)

    asyncio.run(serve())


def _trusted(specs: tuple[str, ...]) -> dict[int, list[ec.EllipticCurvePublicKey]]:
    from firmware_catalog.errors import KeyFileError
    from firmware_catalog.keys import load_public_key

    trusted: dict[int, list[ec.EllipticCurvePublicKey]] = {}
    for spec in specs:
        manufacturer, sep, path = spec.partition("=")
        if not sep or len(manufacturer) != 4:
            raise click.BadParameter(f"{spec!r}: expected MFR=KEY.pub, e.g. 121D=maker.pub", param_hint="--trust")
        try:
            trusted.setdefault(int(manufacturer, 16), []).append(load_public_key(path))
        except (ValueError, KeyFileError) as exc:
            raise click.BadParameter(f"{spec!r}: {exc}", param_hint="--trust") from exc
    return trusted


def _host_port(text: str, option: str = "--tcp") -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise click.BadParameter(
            f"{text!r}: expected HOST:PORT with a port 0..65535 (0: any free one)", param_hint=option
        )
    return host or "127.0.0.1", int(port_text)


def _link(baud: int, latency_ms: float) -> LinkSettings:
    from simulators.link import LinkSettings

    return LinkSettings(baud=baud, latency_to_hub_s=latency_ms / 1000, latency_to_station_s=latency_ms / 1000)


def _serve_until_signalled(start: Callable[[], Awaitable[Any]]) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        handle = await start()
        try:
            await stop.wait()
        finally:
            close = getattr(handle, "close", None)
            if close is not None:
                await close()

    asyncio.run(main())


def _hub_options(
    state: Path, identity: HubIdentity, trust: tuple[str, ...], signature_scope: str, fault: str
) -> HubOptions:
    from firmware_catalog.signature_scope import SignatureScope
    from simulators.fault import FaultSpecError, parse_faults
    from simulators.hub import HubOptions

    try:
        faults = parse_faults(fault)
    except FaultSpecError as exc:
        raise click.BadParameter(str(exc), param_hint="--fault") from exc
    return HubOptions(
        identity=identity,
        state_dir=state,
        trusted_keys=_trusted(trust),
        signature_scope=SignatureScope(signature_scope),
        faults=faults,
    )


F = TypeVar("F", bound=Callable[..., Any])


def _hub_type_options(func: F) -> F:
    """What kind of hub to simulate: the four codes the policy reads."""
    for option in reversed(
        (
            click.option("--manufacturer", default="121D", show_default=True),
            click.option("--model", default="0000", show_default=True),
            click.option("--hardware", default="1200", show_default=True),
            click.option("--firmware", default="01000000", show_default=True),
        )
    ):
        func = option(func)
    return func


def _signature_scope_option(func: F) -> F:
    """Which bytes the hub's manufacturer signs: a hub follows its manufacturer, whatever a catalog says."""
    from firmware_catalog.signature_scope import DEFAULT_SCOPE, SignatureScope

    return click.option(
        "--signature-scope",
        type=click.Choice([scope.value for scope in SignatureScope]),
        default=DEFAULT_SCOPE.value,
        show_default=True,
        help="Which bytes the hub's manufacturer's signatures cover (docs/firmware-images.md)",
    )(func)


def _link_options(func: F) -> F:
    """The emulated UART between the jig and the hub."""
    func = click.option("--latency-ms", default=1.0, show_default=True, type=click.FloatRange(0, 1000))(func)
    return click.option("--baud", default=921_600, show_default=True, type=click.IntRange(300, 12_000_000))(func)


@sim.command()
@click.option("--tcp", "tcp", metavar="HOST:PORT", help="Serve on a TCP port (port 0: any free one)")
@click.option("--pty", "pty", is_flag=True, help="Serve on a new pty and print its path")
@click.option("--identity", "identity_file", type=click.Path(exists=True, dir_okay=False), help="Identity JSON")
@_hub_type_options
@click.option("--chf-id", default="00-DB-12-34-56-78-90-A0", show_default=True)
@click.option("--gpf-id", default="00-DB-12-34-56-78-90-A1", show_default=True)
@click.option("--trust", multiple=True, metavar="MFR=KEY.pub", help="A key the hub's own signature check accepts")
@_signature_scope_option
@_link_options
@click.option("--fault", default="", help="Fault spec, e.g. power-loss@65536,corrupt-every=7 (docs/simulator.md)")
@click.option("--state", "state", default="work/sim-hub", show_default=True, type=click.Path(file_okay=False))
def hub(
    tcp: str | None, pty: bool, identity_file: str | None, manufacturer: str, model: str, hardware: str,
    firmware: str, chf_id: str, gpf_id: str, trust: tuple[str, ...], signature_scope: str, baud: int,
    latency_ms: float, fault: str, state: str,
) -> None:  # fmt: skip
    """Serve one simulated hub until stopped, on a pty (`--pty` prints the path to open) or a TCP port."""
    from firmware_catalog.hub import HubIdentity
    from simulators.hub import IdentityFileError, load_identity
    from simulators.hub_server import HubServer

    if bool(tcp) == pty:
        raise click.UsageError("give exactly one of --tcp HOST:PORT or --pty")
    tcp_host, tcp_port = _host_port(tcp) if tcp else ("", 0)
    try:
        identity = (
            load_identity(identity_file)
            if identity_file
            else HubIdentity(
                manufacturer=manufacturer,
                model=model,
                hardware_version=hardware,
                firmware_version=firmware,
                chf_id=chf_id,
                gpf_id=gpf_id,
                han_variant="Single Band",
                chts_version="V1.3",
                serial=f"SIM-{chf_id.replace('-', '')}",
            )
        )
    except (IdentityFileError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc
    server = HubServer(_hub_options(Path(state), identity, trust, signature_scope, fault), _link(baud, latency_ms))

    async def start() -> Any:
        if pty:
            port, task = await server.serve_pty()
            click.echo(port.path, nl=True)

            class Served:
                async def close(self) -> None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    await port.close()

            return Served()
        listening = await server.serve_tcp(tcp_host, tcp_port)
        click.echo(listening.url)
        return listening

    _serve_until_signalled(start)


def _bench_number(state: Path, given: int | None) -> int:
    """The bench's number, which keeps its hubs' device IDs apart from every other bench's: the one given, else the
    one this state folder already has, else a new random one kept there."""
    from station.atomic_file import write_atomically

    record = state / "bench.json"
    if given is None and record.exists():
        try:
            return int(json.loads(record.read_text())["bench"])
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise click.BadParameter(f"{record}: not a bench record ({exc}); delete it or give --bench") from exc
    number = given if given is not None else secrets.randbelow(0x10000)
    state.mkdir(parents=True, exist_ok=True)
    write_atomically(record, json.dumps({"bench": number}))
    return number


def _toml(text: str) -> str:
    """A TOML basic string."""
    return json.dumps(text)


def bench_device_ids(bench: int, slot: int) -> tuple[str, str]:
    """CHF and GPF device IDs of the hub on `slot` (from 1) of bench number `bench`."""
    from firmware_catalog.hub import format_eui64

    return format_eui64(0x00DB510000000000 | bench << 16 | slot), format_eui64(0x00DB520000000000 | bench << 16 | slot)


@sim.command()
@click.option("--slots", required=True, type=click.IntRange(1, 256))
@click.option("--write-config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Replace an existing --write-config file")
@click.option(
    "--bench",
    "bench_number",
    type=click.IntRange(0, 0xFFFF),
    help="Bench number for the hubs' device IDs (default: kept in --state, random the first time)",
)
@click.option(
    "--port-base",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Slot N listens on PORT-BASE + N - 1 (0: any free ports)",
)
@_hub_type_options
@click.option("--trust", multiple=True, metavar="MFR=KEY.pub", help="A key the hubs' signature check accepts")
@_signature_scope_option
@_link_options
@click.option("--fault", default="", help="Fault spec for every hub")
@click.option("--state", "state", default="work/sim-bench", show_default=True, type=click.Path(file_okay=False))
@click.option("--catalog", "catalog_dir", default="catalog", show_default=True, help="For the written config")
@click.option("--authority", default="keys/authority.pub", show_default=True, help="For the written config")
@click.option("--station-id", default="sim-station", show_default=True, help="For the written config: [station] id")
@click.option("--operator", default="sim-operator", show_default=True, help="For the written config")
@click.option("--facility", default="SSC-SIM", show_default=True, help="For the written config: facility_approval")
@click.option("--station-key", help="For the written config: [station] key (signs audit checkpoints)")
@click.option("--broker", help="For the written config: [mqtt] url, e.g. mqtt://127.0.0.1:1883")
@click.option("--json", "as_json", is_flag=True, help="Print the bench (slots, URLs, device IDs) as one JSON line")
def bench(
    slots: int, config_path: str, force: bool, bench_number: int | None, port_base: int, manufacturer: str,
    model: str, hardware: str, firmware: str, trust: tuple[str, ...], signature_scope: str, baud: int,
    latency_ms: float, fault: str, state: str, catalog_dir: str, authority: str, station_id: str, operator: str,
    facility: str, station_key: str | None, broker: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Serve N simulated hubs on TCP ports and write a station config whose slots reach them.

    Prints each slot's URL and its hub's CHF and GPF IDs (the IDs an order names), then serves until stopped.
    """
    from firmware_catalog.hub import HubIdentity
    from simulators.hub_server import HubServer
    from station.atomic_file import write_atomically
    from station.identifier import check_label, check_name

    if port_base and port_base + slots - 1 > 65535:
        raise click.BadParameter(f"{port_base} + {slots} slots runs past port 65535", param_hint="--port-base")
    for value, hint in ((station_id, "--station-id"), (operator, "--operator"), (facility, "--facility")):
        try:
            check_name(value) if hint == "--station-id" else check_label(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=hint) from exc
    config_file = Path(config_path)
    if config_file.exists() and not force:
        raise click.UsageError(f"{config_file} exists; give --force to replace it")
    number = _bench_number(Path(state), bench_number)
    servers = []
    for n in range(1, slots + 1):
        chf, gpf = bench_device_ids(number, n)
        identity = HubIdentity(
            manufacturer=manufacturer, model=model, hardware_version=hardware, firmware_version=firmware,
            chf_id=chf, gpf_id=gpf, han_variant="Single Band", chts_version="V1.3", serial=f"SIM-{number:04X}-{n:05d}",
        )  # fmt: skip
        servers.append(
            HubServer(
                _hub_options(Path(state) / f"hub-{n:03d}", identity, trust, signature_scope, fault),
                _link(baud, latency_ms),
            )
        )

    async def start() -> Any:
        listening = []
        for n, server in enumerate(servers, 1):
            try:
                listening.append(await server.serve_tcp(port=port_base + n - 1 if port_base else 0))
            except OSError as exc:
                for opened in listening:
                    await opened.close()
                raise click.ClickException(
                    f"slot {n}: cannot listen on port {port_base + n - 1}: {exc.strerror}"
                ) from exc
        lines = [
            "# Written by `reflash sim bench`: slots reaching simulated hubs over TCP. Set [station] for real use.",
            "[station]", f"id = {_toml(station_id)}", 'region = "North"', f"operator = {_toml(operator)}",
            f"facility_approval = {_toml(facility)}", 'store = "state/station.db"',
            *([f"key = {_toml(station_key)}"] if station_key else []), "",
            "[catalog]", f"folder = {_toml(catalog_dir)}", f"authority_key = {_toml(authority)}", "",
            *(["[mqtt]", f"url = {_toml(broker)}", ""] if broker else []),
        ]  # fmt: skip
        for n, opened in enumerate(listening, 1):
            # The station cannot read a TCP jig's UART rate: tell it, so that its timeouts count the right line time.
            lines += ["[[slots]]", f'name = "S{n:03d}"', 'driver = "tcp"', f'url = "{opened.url}"',
                      f"options = {{ line_baud = {baud} }}", ""]  # fmt: skip
        write_atomically(config_file, "\n".join(lines), durable=False)
        hubs = [
            {"slot": f"S{n:03d}", "url": opened.url, "chf_id": bench_device_ids(number, n)[0],
             "gpf_id": bench_device_ids(number, n)[1]}
            for n, opened in enumerate(listening, 1)
        ]  # fmt: skip
        if as_json:
            print_json_line({"config": str(config_file), "bench": number, "hubs": hubs})
        else:
            click.echo(f"serving {slots} hubs (bench {number}); wrote {config_file}")
            for hub in hubs:
                click.echo(f"  {hub['slot']}  {hub['url']}  CHF {hub['chf_id']}  GPF {hub['gpf_id']}")

        class Closer:
            async def close(self) -> None:
                for opened in listening:
                    await opened.close()

        return Closer()

    _serve_until_signalled(start)
