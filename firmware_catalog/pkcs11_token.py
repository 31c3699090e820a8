"""Keys in a PKCS#11 token: signing with a key that never leaves it (`TokenSigner`), and making one there
(`make_token_key`).

The library is python-pkcs11 rather than PyKCS11: it ships type information (py.typed and stubs for its Cython core,
which mypy --strict checks), it raises one exception class per PKCS#11 return value (`PinIncorrect`, `NoSuchToken`,
`NoSuchKey`, `AttributeSensitive`, ...), which is what turning each failure into a sentence needs, and it speaks
Python objects (tokens, sessions, keys) where PyKCS11 mirrors the C API's handles and templates.

Signatures are CKM_ECDSA over a SHA-256 digest made here: the mechanism every token with P-256 has, and its output
is already the raw r||s this project uses (firmware_catalog/keys.py). The PIN is read from a file or the environment
(`pkcs11_uri`), used to log in and dropped; it appears in no message.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Any, ClassVar

import pkcs11
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import (
    MultipleObjectsReturned,
    MultipleTokensReturned,
    NoSuchKey,
    NoSuchToken,
    PinIncorrect,
    PinInvalid,
    PinLenRange,
    PinLocked,
    PKCS11Error,
    UserAlreadyLoggedIn,
)
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from firmware_catalog.errors import KeyFileError
from firmware_catalog.keys import SIGNATURE_SIZE
from firmware_catalog.pkcs11_uri import MODULE_ENV, PIN_ENV, Pkcs11Uri

__all__ = ["TokenSigner", "make_token_key"]


def _module(uri: Pkcs11Uri) -> Any:
    path = uri.module_path or os.environ.get(MODULE_ENV)
    if not path:
        raise KeyFileError(f"no PKCS#11 module: add module-path=/path/to/module.so to the URI, or set ${MODULE_ENV}")
    if not Path(path).is_file():
        raise KeyFileError(f"PKCS#11 module {path} not found")
    try:
        return pkcs11.lib(path)
    except PKCS11Error as exc:
        raise KeyFileError(f"PKCS#11 module {path} cannot be loaded: {exc}") from exc


def _pin(uri: Pkcs11Uri) -> str:
    source = uri.pin_source
    if source is None:
        pin = os.environ.get(PIN_ENV)
        if pin is None:
            raise KeyFileError(f"no PIN: add pin-source=file:PATH or pin-source=env:NAME to the URI, or set ${PIN_ENV}")
        return pin
    if source.startswith("env:"):
        name = source[4:]
        if name not in os.environ:
            raise KeyFileError(f"pin-source={source}: ${name} is not set")
        return os.environ[name]
    path = source[5:] if source.startswith("file:") else source
    try:
        # A PIN file written with echo or an editor ends in a newline that is not part of the PIN.
        return Path(path).read_text().rstrip("\r\n")
    except OSError as exc:
        raise KeyFileError(f"pin-source={source}: cannot read the PIN file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise KeyFileError(f"pin-source={source}: the PIN file is not UTF-8 text") from exc


def _token_name(uri: Pkcs11Uri) -> str:
    return f"token {uri.token!r}" if uri.token is not None else f"token with serial {uri.serial!r}"


def _object_name(uri: Pkcs11Uri) -> str:
    return f"object {uri.object!r}" if uri.object is not None else f"id {uri.id!r}"


def _token(uri: Pkcs11Uri) -> Any:
    lib = _module(uri)
    query: dict[str, Any] = {}
    if uri.token is not None:
        query["token_label"] = uri.token
    if uri.serial is not None:
        query["token_serial"] = uri.serial.encode()
    try:
        return lib.get_token(**query)
    except NoSuchToken as exc:
        raise KeyFileError(f"{_token_name(uri)} not found in PKCS#11 module {lib.so}") from exc
    except MultipleTokensReturned as exc:
        raise KeyFileError(f"more than one {_token_name(uri)}; name it by serial= as well") from exc


def _log_in(uri: Pkcs11Uri, token: Any, pin: str, *, rw: bool) -> Any:
    try:
        return token.open(rw=rw, user_pin=pin)
    except (PinIncorrect, PinInvalid, PinLenRange) as exc:
        raise KeyFileError(f"wrong PIN for {_token_name(uri)}") from exc
    except PinLocked as exc:
        raise KeyFileError(
            f"the PIN of {_token_name(uri)} is locked (too many wrong PINs): its security officer must reset it"
        ) from exc
    except UserAlreadyLoggedIn:
        # Logged in already by this process (a signer of ours): this session shares that login.
        return token.open(rw=rw)
    except PKCS11Error as exc:
        raise KeyFileError(f"cannot open {_token_name(uri)}: {type(exc).__name__} {exc}") from exc


class _Login:
    """One logged-in session per token and process, shared by the signers that use the token.

    PKCS#11 login belongs to the application and the token, not to a session, and closing the session that logged
    in logs out every other session of the token: two signers on one token (the old and the new key of a rotation)
    must share one login, and it ends when the last of them is closed."""

    held: ClassVar[dict[tuple[str, bytes, str], _Login]] = {}

    def __init__(self, session: Any, pin_digest: bytes, where: tuple[str, bytes, str]) -> None:
        self.session = session
        self.pin_digest = pin_digest
        self.where = where
        self.users = 0

    @classmethod
    def acquire(cls, uri: Pkcs11Uri) -> _Login:
        token = _token(uri)
        pin = _pin(uri)
        digest = hashlib.sha256(pin.encode()).digest()
        where = (str(token.slot.slot_id), token.serial, token.label)
        login = cls.held.get(where)
        if login is None:
            login = cls.held[where] = _Login(_log_in(uri, token, pin, rw=False), digest, where)
        elif not hmac.compare_digest(login.pin_digest, digest):
            # A token has one user PIN: another one than the login's is wrong, even though no C_Login would say so.
            raise KeyFileError(f"wrong PIN for {_token_name(uri)}")
        login.users += 1
        return login

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            del _Login.held[self.where]
            self.session.close()


def _search(uri: Pkcs11Uri, object_class: ObjectClass) -> dict[Attribute, Any]:
    found: dict[Attribute, Any] = {Attribute.CLASS: object_class, Attribute.KEY_TYPE: KeyType.EC}
    if uri.object is not None:
        found[Attribute.LABEL] = uri.object
    if uri.id is not None:
        found[Attribute.ID] = uri.id
    return found


def _public_key(session: Any, uri: Pkcs11Uri) -> ec.EllipticCurvePublicKey:
    objects = list(session.get_objects(_search(uri, ObjectClass.PUBLIC_KEY)))
    if len(objects) != 1:
        how = "no" if not objects else "more than one"
        raise KeyFileError(f"{_token_name(uri)} holds {how} EC public key for {_object_name(uri)}")
    key = serialization.load_der_public_key(encode_ec_public_key(objects[0]))
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError(f"{_object_name(uri)} in {_token_name(uri)} is not an ECDSA P-256 key")
    return key


class TokenSigner:
    """Signs with a private key inside a PKCS#11 token, through one logged-in session kept for its lifetime."""

    def __init__(self, uri: Pkcs11Uri) -> None:
        self.uri = uri
        login = _Login.acquire(uri)
        self._login: _Login | None = login
        self._session = login.session
        try:
            self._public = _public_key(self._session, uri)
            attributes = _search(uri, ObjectClass.PRIVATE_KEY)
            try:
                self._private = self._session.get_key(
                    object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.EC,
                    label=attributes.get(Attribute.LABEL), id=attributes.get(Attribute.ID),
                )  # fmt: skip
            except NoSuchKey as exc:
                raise KeyFileError(f"{_token_name(uri)} holds no EC private key for {_object_name(uri)}") from exc
            except MultipleObjectsReturned as exc:
                raise KeyFileError(f"{_token_name(uri)} holds more than one key for {_object_name(uri)}") from exc
            if not self._private[Attribute.SIGN]:
                raise KeyFileError(
                    f"{_object_name(uri)} in {_token_name(uri)} is not allowed to sign (its CKA_SIGN is false)"
                )
        except BaseException:
            login.release()
            raise

    def sign(self, message: bytes) -> bytes:
        try:
            signature: bytes = self._private.sign(hashlib.sha256(message).digest(), mechanism=Mechanism.ECDSA)
        except PKCS11Error as exc:
            raise KeyFileError(f"{_token_name(self.uri)} refused to sign: {type(exc).__name__} {exc}") from exc
        if len(signature) != SIGNATURE_SIZE:
            raise KeyFileError(f"{_token_name(self.uri)} made a {len(signature)}-byte signature, not 64 (r||s)")
        return signature

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def close(self) -> None:
        """Let go of the token; the last signer of a token to close ends the login."""
        if self._login is not None:
            self._login.release()
            self._login = None


def make_token_key(uri: Pkcs11Uri) -> ec.EllipticCurvePublicKey:
    """Make an ECDSA P-256 key pair inside the token: the private key sensitive, not extractable, allowed to sign
    and nothing else. Refuses when the token already holds an object of that label or id."""
    # A read-write session of its own, logged in for this call unless a signer of ours holds the token's login.
    with _log_in(uri, _token(uri), _pin(uri), rw=True) as session:
        for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
            if next(iter(session.get_objects(_search(uri, object_class))), None) is not None:
                raise KeyFileError(f"{_token_name(uri)} already holds a key for {_object_name(uri)}; never replaced")
        params = session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True
        )
        label = uri.object if uri.object is not None else ""
        key_id = uri.id if uri.id is not None else secrets.token_bytes(8)
        params.generate_keypair(
            store=True,
            label=label,
            id=key_id,
            public_template={Attribute.VERIFY: True, Attribute.ENCRYPT: False, Attribute.WRAP: False},
            private_template={
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.SIGN: True,
                Attribute.DECRYPT: False,
                Attribute.UNWRAP: False,
                Attribute.DERIVE: False,
            },
        )
        # Read back as the token now holds it, so the public key written is the one signatures verify under.
        return _public_key(session, uri)
