"""The `--config` option every station command shares, and opening the store it names."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from firmware_catalog.errors import CatalogError
from station.config import ConfigError, StationConfig, load_config
from station.store import Store

__all__ = ["CONFIG_ENV", "config_option", "open_store"]

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


def open_store(config_path: str) -> tuple[StationConfig, Store]:
    try:
        config = load_config(config_path)
        return config, Store.from_config(config)
    except (ConfigError, CatalogError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
