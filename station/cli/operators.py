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


def _read_badge() -> str:
    """The badge's code as its scanner types it: at a prompt without echo, or the next line on stdin."""
    if sys.stdin.isatty():
        return str(click.prompt("Scan the badge", hide_input=True))
    return sys.stdin.readline().rstrip("\r\n")


@click.group()
def operators() -> None:
    """Operators who sign in at the bench page, with their role and PIN."""


@operators.command("add")
@click.argument("operator_id", metavar="ID")
@click.option("--role", type=ROLES, required=True, help="operator: scan, dispatch; supervisor: also close, release")
@click.option("--badge", is_flag=True, help="also read a badge's code (scanned after the PIN), to sign in with it")
@config_option
def add_operator(operator_id: str, role: str, badge: bool, config_path: str) -> None:
    """Add an operator; the PIN (4 to 12 digits) is read twice from the terminal or stdin, then, with --badge, the
    badge's code (only its hash is kept)."""
    from station.store import Role, StoreError

    _, store = open_store(config_path, create=True)
    pin = _read_pin()
    code = _read_badge() if badge else None
    try:
        store.roster.add_operator(operator_id, Role(role), pin, badge=code)
    except ValueError as exc:
        fail(str(exc), EXIT_INPUT)
    except StoreError as exc:
        fail(str(exc), EXIT_REFUSED)
    click.echo(f"operator {operator_id} added ({role})")


@operators.command("badge")
@click.argument("operator_id", metavar="ID")
@click.option("--remove", is_flag=True, help="take the operator's badge away (lost or returned)")
@config_option
def set_badge(operator_id: str, remove: bool, config_path: str) -> None:
    """Give an operator a badge, replacing any other (the code is read as a scanner types it), or --remove it."""
    from station.store import StoreError

    _, store = open_store(config_path)
    code = None if remove else _read_badge()
    try:
        store.roster.set_badge(operator_id, code)
    except ValueError as exc:
        fail(str(exc), EXIT_INPUT)
    except StoreError as exc:
        fail(str(exc), EXIT_REFUSED)
    click.echo(f"operator {operator_id}: badge {'removed' if remove else 'set'}")


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
              "locked_until": o.locked_until, "badge": o.has_badge} for o in store.roster.operators()]  # fmt: skip
    if as_json:
        print_json({"operators": items})
        return
    for item in items:
        locked = f", locked until {item['locked_until']}" if item["locked_until"] else ""
        badge = ", badge" if item["badge"] else ""
        click.echo(f"{item['id']}\t{item['role']}\tadded {item['added_at']}{badge}{locked}")


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
