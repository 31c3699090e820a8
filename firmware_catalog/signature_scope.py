"""The signature scope: which bytes of an Upgrade Image a manufacturer's ECDSA signature covers.

The GBCS text on the scope is not public, and implementations differ: this project's rule signs every byte before
the signature-length byte (header, Manufacturer Image and control byte); another signs the Manufacturer Image alone.
So the scope is a property of each manufacturer key in the catalog, not a constant in code: a station follows the
manufacturer when the catalog authority says so. Whatever the scope, the catalog pins the SHA-256 of the whole
Upgrade Image file, so a byte the signature leaves out is still covered by the pin.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DEFAULT_SCOPE", "SignatureScope"]


class SignatureScope(StrEnum):
    """A named rule for the signed bytes; the values are what catalogs and command lines spell."""

    # Everything before the signature-length byte: the OTA header, the Manufacturer Image and the control byte.
    HEADER_IMAGE_CONTROL = "header-image-control"
    # The Manufacturer Image bytes alone: the header and the control byte are left to the catalog's pin.
    MANUFACTURER_IMAGE = "manufacturer-image"


# What a key without a stated scope signs: the rule this project has always applied (catalogs built before the field
# existed carry no scope and mean this).
DEFAULT_SCOPE = SignatureScope.HEADER_IMAGE_CONTROL
