"""What may be flashed: GBCS Upgrade Images, signing keys, the signed approved-firmware catalog and the policy.

Pure: no I/O but reading the files it is given. Never imports the station, drivers or simulators.

The names below are imported from their modules on first use (PEP 562), so that importing one light module of the
package (its errors, a hub identity) does not pay for cryptography and every schema.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from firmware_catalog.catalog import Catalog, CatalogEntry, CatalogHolder, CatalogPin, load_catalog
    from firmware_catalog.catalog_source import BuildReport, build_catalog, read_source
    from firmware_catalog.errors import (
        CatalogError,
        CatalogFormatError,
        CatalogRefused,
        ImageFormatError,
        KeyFileError,
    )
    from firmware_catalog.hub import HubIdentity
    from firmware_catalog.image import UpgradeImage, build_signed_image, parse_image, read_image
    from firmware_catalog.policy import Decision, decide
    from firmware_catalog.reason import RULES, ReasonCode

_HOME = {
    "Catalog": "catalog",
    "CatalogEntry": "catalog",
    "CatalogHolder": "catalog",
    "CatalogPin": "catalog",
    "load_catalog": "catalog",
    "BuildReport": "catalog_source",
    "build_catalog": "catalog_source",
    "read_source": "catalog_source",
    "CatalogError": "errors",
    "CatalogFormatError": "errors",
    "CatalogRefused": "errors",
    "ImageFormatError": "errors",
    "KeyFileError": "errors",
    "HubIdentity": "hub",
    "UpgradeImage": "image",
    "build_signed_image": "image",
    "parse_image": "image",
    "read_image": "image",
    "Decision": "policy",
    "decide": "policy",
    "RULES": "reason",
    "ReasonCode": "reason",
}

__all__ = [
    "RULES",
    "BuildReport",
    "Catalog",
    "CatalogEntry",
    "CatalogError",
    "CatalogFormatError",
    "CatalogHolder",
    "CatalogPin",
    "CatalogRefused",
    "Decision",
    "HubIdentity",
    "ImageFormatError",
    "KeyFileError",
    "ReasonCode",
    "UpgradeImage",
    "build_catalog",
    "build_signed_image",
    "decide",
    "load_catalog",
    "parse_image",
    "read_image",
    "read_source",
]


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'firmware_catalog' has no attribute {name!r}")
    return getattr(importlib.import_module(f"firmware_catalog.{module}"), name)
