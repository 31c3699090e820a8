"""The signer: whatever makes this project's signatures (raw 64-byte r||s ECDSA P-256 over SHA-256).

Everything that signs (an Upgrade Image, a catalog, an audit checkpoint, a key handover) takes a `Signer`, so that
the private key may be a file in memory (`KeySigner`, for development and tests) or an object in a PKCS#11 token
that never lets it out (`firmware_catalog.pkcs11_token.TokenSigner`). `firmware_catalog.key_reference` turns what
a person writes (a path or a `pkcs11:` URI) into one.
"""

from __future__ import annotations

from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from firmware_catalog.keys import sign_raw

__all__ = ["KeySigner", "Signer", "signer_of"]


class Signer(Protocol):
    """Makes raw r||s ECDSA P-256 signatures over SHA-256 of a message, and names its public key."""

    def sign(self, message: bytes) -> bytes:
        """64 bytes: r then s, each 32 bytes big-endian."""
        ...

    def public_key(self) -> ec.EllipticCurvePublicKey: ...


class KeySigner:
    """A private key held in this process's memory (read from a PKCS#8 PEM file, or made for a test)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key

    def sign(self, message: bytes) -> bytes:
        return sign_raw(self._key, message)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()


def signer_of(key: Signer | ec.EllipticCurvePrivateKey) -> Signer:
    """A signer for `key`: a private key in memory is wrapped, a signer is itself."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return KeySigner(key)
    return key
