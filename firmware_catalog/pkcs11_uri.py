"""The PKCS#11 URI (RFC 7512) that names a key in a token: which module, token and object, and where its PIN is.

`pkcs11:token=reflash;object=authority?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin`

Only what a station needs is accepted, and anything else is refused by name rather than ignored: an ignored
`tokn=` would make the URI match any token. A PIN in the URI (`pin-value`) is refused, because a URI is typed on
command lines and written in config files, where a PIN must never be; the PIN comes from `pin-source` (a file, or
`env:NAME`) or from $REFLASH_PKCS11_PIN.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, unquote_to_bytes

__all__ = ["MODULE_ENV", "PIN_ENV", "SCHEME", "Pkcs11Uri", "is_pkcs11_uri"]

SCHEME = "pkcs11:"
MODULE_ENV = "REFLASH_PKCS11_MODULE"
PIN_ENV = "REFLASH_PKCS11_PIN"

_PATH_ATTRIBUTES = ("token", "serial", "object", "id", "type")
_QUERY_ATTRIBUTES = ("module-path", "pin-source")


def is_pkcs11_uri(reference: str) -> bool:
    return reference[: len(SCHEME)].lower() == SCHEME


def _pairs(part: str, separator: str, known: tuple[str, ...], kind: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in part.split(separator):
        if not item:
            continue
        name, equals, value = item.partition("=")
        name = name.strip().lower()
        if not equals:
            raise ValueError(f"{kind} attribute {name!r} has no value (write {name}=VALUE)")
        if name == "pin-value":
            raise ValueError(
                "pin-value is refused: a PIN must never be on a command line or in a config file; give "
                f"pin-source=file:PATH or pin-source=env:NAME, or set ${PIN_ENV}"
            )
        if name not in known:
            raise ValueError(f"{kind} attribute {name!r} is not supported here (use {', '.join(known)})")
        if name in found:
            raise ValueError(f"{kind} attribute {name!r} is given twice")
        found[name] = value
    return found


@dataclass(frozen=True)
class Pkcs11Uri:
    """A parsed `pkcs11:` URI; `text` is the URI as given (it holds no PIN: one would have been refused)."""

    text: str
    token: str | None
    serial: str | None
    object: str | None
    id: bytes | None
    module_path: str | None
    pin_source: str | None

    @classmethod
    def parse(cls, text: str) -> Pkcs11Uri:
        """Raises ValueError naming what is wrong."""
        if not is_pkcs11_uri(text):
            raise ValueError(f"not a PKCS#11 URI (it starts with {SCHEME})")
        path, _, query = text[len(SCHEME) :].partition("?")
        attributes = _pairs(path, ";", _PATH_ATTRIBUTES, "path")
        options = _pairs(query, "&", _QUERY_ATTRIBUTES, "query")
        kind = unquote(attributes.get("type", "private"))
        if kind != "private":
            raise ValueError(f"type={kind}: the key that signs is a private key (type=private, or leave type out)")
        uri = cls(
            text=text,
            token=unquote(attributes["token"]) if "token" in attributes else None,
            serial=unquote(attributes["serial"]) if "serial" in attributes else None,
            object=unquote(attributes["object"]) if "object" in attributes else None,
            id=unquote_to_bytes(attributes["id"]) if "id" in attributes else None,
            module_path=unquote(options["module-path"]) if "module-path" in options else None,
            pin_source=unquote(options["pin-source"]) if "pin-source" in options else None,
        )
        if uri.token is None and uri.serial is None:
            raise ValueError("name the token: token=LABEL or serial=SERIAL")
        if uri.object is None and uri.id is None:
            raise ValueError("name the key: object=LABEL or id=%XX..")
        return uri
