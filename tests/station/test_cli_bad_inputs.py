"""Every door of `reflash`, walked: each command's parameters are given values that are wrong for their type (a
path that leads nowhere, a folder, a file of garbage, a number that is not one, a choice that does not exist). Each
run must end with exit 2 (bad input) or 1 (a refusal), a message that names the parameter or the value, no traceback,
and the station's store unchanged. Every other parameter gets a good value (a built catalog, a real key, an order
that exists), so each parameter is walked alone: the refusal must be about it. The cases are generated from the
command tree, so a new command or option is walked without anyone adding it here."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from station.cli import COMMANDS, main
from station.demo import CONFIG_DIR, build_demo_world
from tests.station.conftest import store_contents

# Commands that serve until stopped once their input is good: walked with bad input only, which must stop them.
SKIP = {("demo",)}  # it takes no input that names a station file; tests/station/test_demo.py covers its door


def commands() -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, (module, attribute, _) in sorted(COMMANDS.items()):
        command = getattr(importlib.import_module(module), attribute)
        if isinstance(command, click.Group):
            for sub_name, sub in sorted(command.commands.items()):
                yield (name, sub_name), sub
        else:
            yield (name,), command


# Wrong values by kind; a path kind is made under the station folder when the case runs.
_VALUES = {
    "nowhere": "{root}/nowhere/x",
    "folder": "{root}",
    "garbage": "{root}/garbage.bin",
    "not-a-number": "many",
    "huge": "99999999999999999999",
    "no-such-choice": "no-such-choice",
    "port-out-of-range": "tcp://127.0.0.1:99999",
    "bad-usb": "usb://bad",
    "unknown-scheme": "ftdi://x",
    "not-hex": "XYZ",
    "short-hex": "1",
}


# Parameters that name a folder the command makes or fills when it is missing: a folder, or a path that does not
# exist yet, is good input for them; only a file where the folder belongs is wrong.
_FOLDERS_MADE = {"state_dir", "workdir", "state"}
# Commands that serve until stopped once their input is good: walked in a process of their own with a time limit, so
# that a bad value taken for a good one shows as a failure, not as a test run that never ends.
_SERVERS = {("sim", "bench"), ("sim", "hub"), ("sim", "dsp-bridge"), ("run",)}


# Where a kind of value is good input for one command's parameter: an output folder the command makes when it is
# missing (`catalog build --out` refuses a folder that holds anything it did not write; `orders close --out` writes
# its report files into any folder).
_BAD_FOR: dict[tuple[str, ...], list[str]] = {
    ("catalog", "build", "out"): ["folder", "garbage"],
    ("orders", "close", "out"): ["garbage"],
    ("catalog", "sign-image", "manufacturer_image"): ["nowhere", "folder"],  # any bytes are a Manufacturer Image
    ("sim", "dsp-bridge", "db"): ["folder", "garbage"],  # the bridge makes its SMI database where it is told
    ("sim", "dsp-bridge", "anchors_out"): ["nowhere", "folder"],  # a file there is rewritten, as an export is
}
# Parameters that only go together: the one under test gets its partner's good value.
_PARTNERS = {"authority": "catalog_dir", "catalog_dir": "authority"}


def bad_kinds(param: click.Parameter, command_path: tuple[str, ...] = ()) -> list[str]:
    kind = param.type
    if (*command_path, param.name) in _BAD_FOR:
        return _BAD_FOR[(*command_path, param.name or "")]
    if param.name == "prefix":  # keygen writes PREFIX.key and PREFIX.pub beside whatever PREFIX names
        return ["nowhere"]
    if param.name in _FOLDERS_MADE:
        return ["garbage"]
    if isinstance(kind, click.Path | click.File) or param.name == "config_path":
        return ["nowhere", "folder", "garbage"]
    if isinstance(kind, click.types.IntParamType | click.types.FloatParamType):
        return ["not-a-number", "huge"]
    if isinstance(kind, click.Choice):
        return ["no-such-choice"]
    if param.name == "url":
        return ["port-out-of-range", "bad-usb", "unknown-scheme"]
    if "hex" in type(kind).__name__.lower():
        return ["not-hex", "short-hex"]
    return []


def cases() -> Iterator[tuple[str, list[str]]]:
    for path, command in commands():
        if path in SKIP:
            continue
        for param in command.params:
            for kind in bad_kinds(param, path):
                yield f"{' '.join(path)} {param.name} {kind}", [*path, param.name or "", kind]


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("doors")
    world = build_demo_world(root / "world")
    config = root / "station.toml"
    config.write_text(
        '[station]\nid = "st-1"\nregion = "North"\noperator = "op-1"\nfacility_approval = "SSC-1"\n'
        f'store = "state/station.db"\n[catalog]\nfolder = "{world.catalog_dir}"\n'
        f'authority_key = "{world.authority_pub}"\n'
    )
    order = root / "order.csv"
    order.write_text("order_ref,requesting_party,csp_region,chf_id\nDCC-1,S,North,00-DB-12-34-00-00-00-01\n")
    assert CliRunner().invoke(main, ["orders", "import", str(order), "--config", str(config)]).exit_code == 0
    (root / "fresh").mkdir()  # where good outputs go, each under a name of its own
    (root / "garbage.bin").write_bytes(b"\xff\xfe\x00 not what anything expects \x1b[31m[/]\n" * 3)
    return root


def valid_value(command_path: tuple[str, ...], param: click.Parameter, station: Path) -> str | None:
    """A value that is right for `param`, so that the parameter under test is the only wrong thing; None where the
    parameter is best left out. Outputs go to fresh paths, so a case whose bad value were taken would still write
    nothing the others read."""
    world = station / "world"
    fresh = station / "fresh" / f"{'-'.join(command_path)}-{param.name}"
    values = {
        "config_path": str(station / "station.toml"),
        "source": str(CONFIG_DIR / "catalog" / "example.toml"),
        "base": str(world),
        "key_path": str(world / "keys" / "authority.key"),
        "key_paths": str(world / "keys" / "maker-121D.pub"),
        "catalog_dir": str(world / "catalog"),
        "authority": str(world / "keys" / "authority.pub"),
        "image_path": str(world / "images" / "121D-0000-01020000.bin"),
        "manufacturer_image": str(station / "garbage.bin"),  # any bytes are a Manufacturer Image
        "out": str(fresh),
        "prefix": str(fresh),
        "path": str(station / "order.csv"),
        "hub_json": '{"manufacturer": "121D", "model": "0000", "hardware_version": "1200", '
        '"firmware_version": "01000000", "chf_id": "00-DB-12-34-00-00-00-01", "gpf_id": "00-DB-12-34-00-00-00-02"}',
        "state_dir": str(fresh),
        "manufacturer": "121D",
        "image_type": "0000",
        "file_version": "01020000",
        "min_hw": "1000",
        "max_hw": "1FFF",
        "role": "operator",
        "operator_id": "olive",
        "name": "line-1",
        "url": "tcp://127.0.0.1:9",  # nothing listens there: a refusal, after every input was checked
        "order_ref": "DCC-1",
    }
    if command_path == ("sim", "bench") and param.name == "config_path":
        return str(fresh)  # `--write-config`: the config it writes
    if command_path == ("fleet", "status"):
        values["broker"] = "mqtt://127.0.0.1:9"  # nothing listens there: a refusal, after every input was checked
    if command_path in _SERVERS:
        values |= {"slots": "1", "tcp": "127.0.0.1:0", "db": str(fresh), "broker": "mqtt://127.0.0.1:9"}
    return values.get(param.name or "")


def args_for(
    command_path: tuple[str, ...], command: click.Command, bad: click.Parameter, value: str, station: Path
) -> list[str]:
    """`value` for the parameter under test and a valid value for every other parameter that needs one: the refusal
    must then be about the parameter under test."""
    garbage = str(station / "garbage.bin")
    given_always = {"config_path", "base", "tcp", "broker", _PARTNERS.get(bad.name or "")}
    out: list[str] = []
    for param in command.params:
        good = valid_value(command_path, param, station)
        if isinstance(param, click.Argument):
            given = value if param is bad else (good or garbage)
            out += [given] * (1 if param.nargs in (1, -1) else param.nargs)
        elif param is bad:
            out += [param.opts[0], value]
        elif param.required or (good is not None and param.name in given_always):
            out += [param.opts[0], good or garbage]
    return out


def digest(station: Path) -> str:
    return store_contents(station / "state" / "station.db")


CASES = list(cases())


@pytest.mark.parametrize("case", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_value_at_any_door(case: list[str], station: Path) -> None:
    *path, name, kind = case
    command = dict(commands())[tuple(path)]
    param = next(p for p in command.params if p.name == name)
    value = _VALUES[kind].format(root=station)
    before = digest(station)
    args = [*path, *args_for(tuple(path), command, param, value, station)]
    if tuple(path) in _SERVERS:
        try:
            ran = subprocess.run(
                [sys.executable, "-c", "from station.cli import main; main()", *args],
                capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            pytest.fail(f"{' '.join(args)}: took the bad value and served")
        output, exit_code = ran.stdout + ran.stderr, ran.returncode
    else:
        result = CliRunner().invoke(main, args, input="")
        output, exit_code = result.output, result.exit_code
    assert "Traceback" not in output
    assert exit_code in (1, 2), f"exit {exit_code}: {output}"
    assert output.strip(), "a refusal says why"
    # The message names what is wrong: the parameter or the value given (a path is named as given or resolved).
    names = {value, str(Path(value).resolve()), param.human_readable_name, *getattr(param, "opts", [])}
    assert any(name and name in output for name in names), f"{names} not named in: {output}"
    assert digest(station) == before, "a refused command changed the store"
