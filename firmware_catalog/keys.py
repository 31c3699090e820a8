"""ECDSA P-256 keys: making them, reading them, and raw r||s signatures over SHA-256.

GBCS carries signatures as 64 raw bytes (32-byte big-endian r, then s); cryptography speaks DER, so this module is
the one place that converts between the two.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from firmware_catalog.errors import KeyFileError

__all__ = [
    "SIGNATURE_SIZE",
    "fingerprint",
    "generate_key",
    "load_private_key",
    "load_public_key",
    "public_key_from_pem",
    "public_key_pem",
    "sign_raw",
    "verify_raw",
    "write_keypair",
]

SIGNATURE_SIZE = 64
_HALF = SIGNATURE_SIZE // 2


def generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def write_keypair(key: ec.EllipticCurvePrivateKey, prefix: str | Path) -> tuple[Path, Path]:
    """Write PREFIX.key (PKCS#8 PEM, mode 0600 from the moment it exists) and PREFIX.pub (SPKI PEM)."""
    private_path = Path(f"{prefix}.key")
    public_path = Path(f"{prefix}.pub")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    # O_EXCL: never overwrite an existing private key; 0o600 at creation so it is never briefly world-readable.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    os.chmod(private_path, 0o600)  # umask may have cleared bits; make the mode exact
    public_path.write_bytes(public_key_pem(key.public_key()))
    return private_path, public_path


def public_key_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _require_p256(key: object, where: str) -> None:
    if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) or not isinstance(
        key.curve, ec.SECP256R1
    ):
        raise KeyFileError(f"{where}: not an ECDSA P-256 key")


def load_private_key(path: str | Path) -> ec.EllipticCurvePrivateKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read private key: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PKCS#8 PEM private key: {exc}") from exc
    _require_p256(key, str(path))
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def public_key_from_pem(data: bytes, where: str) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{where}: not a SubjectPublicKeyInfo PEM public key: {exc}") from exc
    _require_p256(key, where)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def load_public_key(path: str | Path) -> ec.EllipticCurvePublicKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read public key: {exc.strerror}") from exc
    return public_key_from_pem(data, str(path))


def fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, lowercase hex: the key's identity in catalogs and audit."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def sign_raw(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(_HALF, "big") + s.to_bytes(_HALF, "big")


def verify_raw(key: ec.EllipticCurvePublicKey, message: bytes, signature: bytes) -> bool:
    if len(signature) != SIGNATURE_SIZE:
        return False
    r = int.from_bytes(signature[:_HALF], "big")
    s = int.from_bytes(signature[_HALF:], "big")
    if r == 0 or s == 0:
        return False
    try:
        key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
