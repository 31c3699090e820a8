"""Every door of `reflash`, walked: each command's parameters are given values that are wrong for their type (a
path that leads nowhere, a folder, a file of garbage, a number that is not one, a choice that does not exist). Each
run must end with exit 2 (bad input) or 1 (a refusal), one message that says what is wrong, no traceback, and the
station's store unchanged. The cases are generated from the command tree, so a new command or option is walked
without anyone adding it here."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from firmware_catalog.keys import generate_key, write_keypair
from station.cli import COMMANDS, main
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


def bad_kinds(param: click.Parameter) -> list[str]:
    kind = param.type
    if param.name == "prefix":  # keygen writes PREFIX.key and PREFIX.pub beside whatever PREFIX names
        return ["nowhere"]
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
            for kind in bad_kinds(param):
                yield f"{' '.join(path)} {param.name} {kind}", [*path, param.name or "", kind]


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("doors")
    write_keypair(generate_key(), root / "authority")
    config = root / "station.toml"
    config.write_text(
        '[station]\nid = "st-1"\nregion = "North"\noperator = "op-1"\nfacility_approval = "SSC-1"\n'
        'store = "state/station.db"\n[catalog]\nfolder = "catalog"\nauthority_key = "authority.pub"\n'
    )
    order = root / "order.csv"
    order.write_text("order_ref,requesting_party,csp_region,chf_id\nDCC-1,S,North,00-DB-12-34-00-00-00-01\n")
    assert CliRunner().invoke(main, ["orders", "import", str(order), "--config", str(config)]).exit_code == 0
    (root / "garbage.bin").write_bytes(b"\xff\xfe\x00 not what anything expects \x1b[31m[/]\n" * 3)
    return root


def args_for(command: click.Command, bad: click.Parameter, value: str, station: Path) -> list[str]:
    """`value` for the parameter under test; every other required parameter gets a value that is valid where one is
    at hand (the station's config) and garbage otherwise, so the bad value is not the only wrong thing only when
    nothing valid can be made up."""
    garbage = station / "garbage.bin"
    out: list[str] = []
    for param in command.params:
        if isinstance(param, click.Argument):
            given = value if param is bad else str(garbage)
            out += [given] * (1 if param.nargs in (1, -1) else param.nargs)
        elif param is bad:
            out += [param.opts[0], value]
        elif param.name == "config_path":
            out += [param.opts[0], str(station / "station.toml")]
        elif param.required:
            out += [param.opts[0], str(garbage)]
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
    result = CliRunner().invoke(main, [*path, *args_for(command, param, value, station)], input="")
    output = result.output
    assert "Traceback" not in output
    assert result.exit_code in (1, 2), f"exit {result.exit_code}: {output}"
    assert output.strip(), "a refusal says why"
    assert digest(station) == before, "a refused command changed the store"
