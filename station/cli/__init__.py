"""The `reflash` command: one entry point, one subcommand group per area of the station.

Subcommands are imported when they are run, not when `reflash` starts: the station's packages (cryptography,
construct, pydantic models, aiomqtt) cost about half a second of CPU to import, and `reflash --help`, `reflash
status` or a shell completion should not pay for the daemon. The short help of each subcommand is written here so
that the listing needs no import; a test keeps it equal to each command's own.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

import click

__all__ = ["COMMANDS", "main"]

# name -> (module, attribute, the command's short help as click makes it from its docstring at 80 columns)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "audit": ("station.cli.audit", "audit", "The tamper-evident audit trail."),
    "catalog": (
        "station.cli.catalog",
        "catalog",
        "Signing keys, Upgrade Images, the approved-firmware catalog and the re-flash...",
    ),
    "demo": (
        "station.cli.demo",
        "demo",
        "Keys, images, a signed catalog, a private Mosquitto, a simulated bench, the...",
    ),
    "fleet": (
        "station.cli.fleet",
        "fleet",
        "Every station a broker knows: presence, slots, hubs today, backlog, catalog.",
    ),
    "jig": ("station.cli.jig", "jig", "Talk to one jig: identify the hub on it, or flash it."),
    "operators": (
        "station.cli.operators",
        "operators",
        "Operators who sign in at the bench page, with their role and PIN.",
    ),
    "orders": ("station.cli.orders", "orders", "Re-flash orders: import, scan in and out, report, close."),
    "run": ("station.cli.run", "run", "Drive every slot of the bench: identify, decide, flash, verify, activate,..."),
    "sim": ("station.cli.sim", "sim", "Simulated hubs, jigs and the DSP update bridge."),
    "status": ("station.cli.run", "status", "Show the bench as the running station last wrote it (every half second)."),
    "tokens": ("station.cli.operators", "tokens", "API tokens of line controllers: add (shown once), revoke."),
}


EXIT_INTERRUPTED = 130  # the shell's convention for a command stopped by Ctrl-C (128 + SIGINT)
EXIT_INTERNAL = 70  # EX_SOFTWARE: a fault in this program, not in its input
EXIT_INPUT = 2
EXIT_REFUSED = 1
# Paths that do not lead where the operator said: bad input. Other OS errors (a refused connection, a device that
# went away) are the world refusing, not the input being wrong.
_INPUT_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


class _LazyGroup(click.Group):
    """A group whose subcommands are imported on first use, and that never shows an operator a traceback."""

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except OSError as exc:
            # A file, folder or device the operator named that cannot be used: one line, the path and the reason.
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"error: {where}{exc.strerror or exc}", err=True)
            sys.exit(EXIT_INPUT if isinstance(exc, _INPUT_ERRORS) else EXIT_REFUSED)
        except Exception as exc:
            if _debug(args):
                traceback.print_exc()
            else:
                click.echo(f"error: internal error: {exc!r} (run with --debug for the traceback)", err=True)
            sys.exit(EXIT_INTERNAL)
        sys.exit(code if isinstance(code, int) else 0)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = COMMANDS.get(cmd_name)
        if found is None:
            return None
        module, attribute, _ = found
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _debug(args: Any) -> bool:
    given = sys.argv[1:] if args is None else list(args)
    return "--debug" in given[:1] or bool(os.environ.get("REFLASH_DEBUG"))


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="reflash-station")
@click.option("--debug", is_flag=True, envvar="REFLASH_DEBUG", help="Show a traceback when reflash itself fails")
def main(**_: Any) -> None:
    """Re-flash GB smart-metering Communications Hubs under the SSC re-flash guidance.

    Exit status: 0 success, 1 a refusal (a refused catalog, image or hub, a failed hub), 2 bad input or usage,
    70 a fault in reflash itself, 130 interrupted (Ctrl-C).
    """
