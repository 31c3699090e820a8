"""Options station commands share: `--config` (and opening the store it names) and `--state-dir` (the catalog
rollback pins of the tools that have no store)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from station.config import StationConfig
    from station.store import Store

# The name only: importing station.pin_folder would load cryptography for every command's --help.
STATE_DIR_ENV = "REFLASH_STATE_DIR"

__all__ = ["CONFIG_ENV", "config_option", "open_store", "state_dir_option"]

CONFIG_ENV = "REFLASH_CONFIG"
F = TypeVar("F", bound=Callable[..., Any])


def config_option(func: F) -> F:
    return click.option(
        "--config",
        "config_path",
        envvar=CONFIG_ENV,
        default="station.toml",
        show_default=True,
        type=click.Path(dir_okay=False),
        help=f"Station configuration (or ${CONFIG_ENV})",
    )(func)


def open_store(
    config_path: str, *, create: bool = False, signing: bool = True, writes: bool = True
) -> tuple[StationConfig, Store]:
    """The configuration and its store. Only a command that starts a station's records (`orders import`) may
    create the store: anything else would make an empty database from a mistyped path and report on it. A command
    that `writes` is refused with a station key that the audit trail handed over from (it would sign checkpoints
    that `audit verify` refuses); `signing=False` opens no key at all."""
    from firmware_catalog.errors import CatalogError
    from station.config import ConfigError, load_config

    try:
        config = load_config(config_path)
        path = config.resolve(config.station.store)
        if not create and not path.exists():
            raise ConfigError(
                f"{config.source}: [station] store: no station store at {path}; it is made by "
                "`reflash orders import` or `reflash run`"
            )
        store = config.open_store(signing=signing)
        problem = store.audit_log.key_problem() if writes else None
        if problem is not None:
            store.close()
            raise ConfigError(f"{config.source}: [station] key: {problem}")
        return config, store
    except (ConfigError, CatalogError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


def state_dir_option(func: F) -> F:
    """`--state-dir`: where `PinFolder` keeps the catalog rollback pins; None means its default."""
    return click.option(
        "--state-dir",
        "state_dir",
        default=None,
        type=click.Path(file_okay=False),
        help=f"Folder of the catalog rollback pins (default ${STATE_DIR_ENV}, else $XDG_STATE_HOME/reflash, "
        "else ~/.local/state/reflash)",
    )(func)
