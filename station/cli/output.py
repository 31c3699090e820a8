"""How the CLI speaks: JSON for scripts, rich tables for people, errors on stderr with a stable exit status.

Exit status: 0 success (valid, accepted, a flash or nothing-to-do decision), 1 a refusal (invalid signature,
refused catalog, refused hub), 2 bad input or usage (a file that does not parse, a key that cannot be read).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console

from firmware_catalog.errors import CatalogError

__all__ = ["EXIT_INPUT", "EXIT_REFUSED", "console", "fail", "input_errors", "print_json", "print_json_line"]

EXIT_REFUSED = 1
EXIT_INPUT = 2

F = TypeVar("F", bound=Callable[..., Any])


def console() -> Console:
    # Piped output (CI logs, `| less`) gets a width that fits our tables instead of rich's 80-column default.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def print_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2, sort_keys=False))


def print_json_line(payload: Any) -> None:
    """One compact JSON object on one line (JSON Lines), for output a script reads as it comes."""
    click.echo(json.dumps(payload, sort_keys=False))


def fail(message: str, code: int, as_json: bool = False, **details: Any) -> NoReturn:
    """End a command: `error: message` on stderr, or with --json one object `{"error": message, ...}` on stdout
    (a script that asked for JSON gets JSON, errors included); exit `code`."""
    if as_json:
        print_json({"error": message, "exit_status": code, **details})
    else:
        click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def input_errors() -> Iterator[None]:
    """Turn the catalog package's input errors, and a bad catalog pin file, into one line on stderr and exit 2."""
    from station.pin_folder import PinFileError  # here, not at import: it brings cryptography with it

    try:
        yield
    except (CatalogError, PinFileError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INPUT)
