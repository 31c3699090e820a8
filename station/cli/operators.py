"""`reflash operators ...` and `reflash tokens ...`: who may sign in at the bench page, and which line controllers
may use its API (docs/bench-page.md). Every change is an audit entry."""

from __future__ import annotations

import sys

import click

from station.cli.output import EXIT_INPUT, EXIT_REFUSED, fail, print_json
from station.cli.station_options import config_option, open_store

__all__ = ["operators", "tokens"]

ROLES = click.Choice(["operator", "supervisor"])


def _read_pin() -> str:
    """The PIN twice: from the terminal without echo, or two lines on stdin (never an argument: it would show in
    the shell's history and the process list)."""
    if sys.stdin.isatty():
        pin = str(click.prompt("PIN", hide_input=True, confirmation_prompt="PIN again"))
    else:
        lines = [sys.stdin.readline().rstrip("\r\n") for _ in range(2)]
        if lines[0] != lines[1]:
            fail("the two PINs differ", EXIT_INPUT)
        pin = lines[0]
    return pin


@click.group()
def operators() -> None:
    """Operators who sign in at the bench page, with their role and PIN."""


@operators.command("add")
@click.argument("operator_id", metavar="ID")
@click.option("--role", type=ROLES, required=True, help="operator: scan, dispatch; supervisor: also close, release")
@config_option
def add_operator(operator_id: str, role: str, config_path: str) -> None:
    """Add an operator; the PIN (4 to 12 digits) is read twice from the terminal or stdin."""
    from station.store import Role, StoreError

    _, store = open_store(config_path, create=True)
    pin = _read_pin()
    try:
        store.roster.add_operator(operator_id, Role(role), pin)
    except ValueError as exc:
        fail(str(exc), EXIT_INPUT)
    except StoreError as exc:
        fail(str(exc), EXIT_REFUSED)
    click.echo(f"operator {operator_id} added ({role})")


@operators.command("remove")
@click.argument("operator_id", metavar="ID")
@config_option
def remove_operator(operator_id: str, config_path: str) -> None:
    """Remove an operator (signed out of the bench page at their next request)."""
    from station.store import StoreError

    _, store = open_store(config_path)
    try:
        store.roster.remove_operator(operator_id)
    except StoreError as exc:
        fail(str(exc), EXIT_INPUT)
    click.echo(f"operator {operator_id} removed")


@operators.command("list")
@click.option("--json", "as_json", is_flag=True)
@config_option
def list_operators(as_json: bool, config_path: str) -> None:
    """List operators, their role, and whether they are locked out."""
    _, store = open_store(config_path)
    items = [{"id": o.id, "role": o.role.value, "added_at": o.added_at, "failures": o.failures,
              "locked_until": o.locked_until} for o in store.roster.operators()]  # fmt: skip
    if as_json:
        print_json({"operators": items})
        return
    for item in items:
        locked = f", locked until {item['locked_until']}" if item["locked_until"] else ""
        click.echo(f"{item['id']}\t{item['role']}\tadded {item['added_at']}{locked}")


@click.group()
def tokens() -> None:
    """API tokens of line controllers: add (shown once), revoke."""


@tokens.command("add")
@click.argument("name")
@click.option("--role", type=ROLES, required=True)
@config_option
def add_token(name: str, role: str, config_path: str) -> None:
    """Add a token and print it, once: only its SHA-256 is kept."""
    from station.store import Role, StoreError

    _, store = open_store(config_path, create=True)
    try:
        token = store.roster.add_token(name, Role(role))
    except ValueError as exc:
        fail(str(exc), EXIT_INPUT)
    except StoreError as exc:
        fail(str(exc), EXIT_REFUSED)
    click.echo(token)


@tokens.command("revoke")
@click.argument("name")
@config_option
def revoke_token(name: str, config_path: str) -> None:
    """Revoke a token: the API refuses it from the next request on."""
    from station.store import StoreError

    _, store = open_store(config_path)
    try:
        store.roster.revoke_token(name)
    except StoreError as exc:
        fail(str(exc), EXIT_INPUT)
    click.echo(f"token {name} revoked")
