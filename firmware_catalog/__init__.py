"""What may be flashed: GBCS Upgrade Images, signing keys, the signed approved-firmware catalog and the policy.

Pure: no I/O but reading the files it is given. Never imports the station, drivers or simulators.
"""

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
