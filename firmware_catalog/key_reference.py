"""The key reference: how a person names a private key (a PKCS#8 PEM file's path, or a `pkcs11:` URI for a key in
a token), turned into a `Signer` in one place, with errors that name the option and what is wrong.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from firmware_catalog.errors import KeyFileError
from firmware_catalog.keys import load_private_key
from firmware_catalog.pkcs11_uri import Pkcs11Uri, is_pkcs11_uri
from firmware_catalog.signer import KeySigner, Signer

__all__ = ["is_pkcs11_uri", "make_key_in_token", "open_signer", "parse_token_uri"]


def parse_token_uri(reference: str, where: str) -> Pkcs11Uri:
    try:
        return Pkcs11Uri.parse(reference)
    except ValueError as exc:
        raise KeyFileError(f"{where}: {exc}") from exc


def make_key_in_token(reference: str, where: str) -> ec.EllipticCurvePublicKey:
    """Make a P-256 key inside the token `reference` names (`pkcs11_token.make_token_key`); returns its public key."""
    from firmware_catalog.pkcs11_token import make_token_key

    uri = parse_token_uri(reference, where)
    try:
        return make_token_key(uri)
    except KeyFileError as exc:
        raise KeyFileError(f"{where}: {exc}") from exc


def open_signer(reference: str | Path, where: str, base: Path | None = None) -> Signer:
    """A signer for `reference`: a `pkcs11:` URI opens the token and finds the key (PIN from the URI's pin-source or
    $REFLASH_PKCS11_PIN); anything else is a private key file, resolved against `base` when relative.
    Raises KeyFileError beginning with `where` (the option or config key the reference came from)."""
    text = str(reference)
    if is_pkcs11_uri(text):
        from firmware_catalog.pkcs11_token import TokenSigner  # the PKCS#11 library only when a token is named

        uri = parse_token_uri(text, where)
        try:
            return TokenSigner(uri)
        except KeyFileError as exc:
            raise KeyFileError(f"{where}: {exc}") from exc
    path = Path(text)
    if base is not None and not path.is_absolute():
        path = base / path
    try:
        return KeySigner(load_private_key(path))
    except KeyFileError as exc:
        raise KeyFileError(f"{where}: {exc}") from exc
