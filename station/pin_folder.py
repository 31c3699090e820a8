"""The command-line tools' catalog rollback pins: one small file per catalog authority key, in a state folder.

The station daemon pins the last catalog it accepted in its SQLite store. `reflash jig flash`, `reflash catalog
check` and `reflash catalog verify --catalog` have no store, and without a pin they would accept any unexpired
catalog the authority ever signed, including an older one that still trusts a key revoked since. They share the pins
kept here: `PinFolder.load` loads a catalog under the pin for its authority key and raises the pin when it accepts a
newer catalog.

A pin also remembers a catalog authority rotation: once a catalog signed by a new authority with a handover from
the given key is accepted, the pin names the chain of authority keys, and the newest alone is trusted from then on
(firmware_catalog/authority_handover.py).

A pin file that cannot be read is an error naming the file, never a silent reset: resetting the pin is what a
rollback needs, so it is done by a person deleting the file (docs/catalog.md).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from firmware_catalog.catalog import Catalog, CatalogPin, Sha256Hex, load_catalog
from firmware_catalog.keys import fingerprint, public_key_from_pem, public_key_pem
from station.atomic_file import write_atomically

__all__ = ["STATE_DIR_ENV", "PinFileError", "PinFolder"]

STATE_DIR_ENV = "REFLASH_STATE_DIR"


class PinFileError(Exception):
    """A pin file (or the folder it lives in) that cannot be read, parsed or written; the message names it."""


class _PinRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["reflash-catalog-pin/1"] = "reflash-catalog-pin/1"
    authority: Sha256Hex
    serial: int = Field(ge=1)
    digest: Sha256Hex
    # For the person who finds the file: which catalog raised the pin, and when. Not used to decide anything.
    catalog: str
    accepted_at: datetime
    # The authority keys (SPKI PEM) trusted in turn after handovers from `authority`, oldest first; empty: none.
    authority_chain: tuple[str, ...] = ()


class PinFolder:
    """The folder of catalog pins, one per authority key fingerprint: `catalog-pin-<fingerprint>.json`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def locate(cls, state_dir: str | Path | None = None, environ: Mapping[str, str] | None = None) -> PinFolder:
        """`state_dir` if given, else $REFLASH_STATE_DIR, else $XDG_STATE_HOME/reflash, else ~/.local/state/reflash."""
        env = os.environ if environ is None else environ
        if state_dir:
            return cls(Path(state_dir))
        if env.get(STATE_DIR_ENV):
            return cls(Path(env[STATE_DIR_ENV]))
        xdg = env.get("XDG_STATE_HOME", "")
        # The XDG base directory spec says a relative path in $XDG_STATE_HOME is invalid and must be ignored.
        if xdg and Path(xdg).is_absolute():
            return cls(Path(xdg) / "reflash")
        home = Path(env["HOME"]) if env.get("HOME") else Path.home()
        return cls(home / ".local" / "state" / "reflash")

    def file_for(self, authority: ec.EllipticCurvePublicKey) -> Path:
        return self.path / f"catalog-pin-{fingerprint(authority)}.json"

    def pin(self, authority: ec.EllipticCurvePublicKey) -> CatalogPin | None:
        """The pin for catalogs signed by `authority`, or None before the first catalog is accepted."""
        return self._read(self.file_for(authority), fingerprint(authority))

    def load(self, folder: str | Path, authority: ec.EllipticCurvePublicKey, now: datetime) -> Catalog:
        """`load_catalog` under this folder's pin for `authority`; a newer catalog accepted raises the pin.

        Raises what `load_catalog` raises (CATALOG_ROLLBACK among them), and PinFileError for a bad pin file.
        """
        key = fingerprint(authority)
        path = self.file_for(authority)
        # One tool at a time per pin: two that read the same pin and both raise it could otherwise lower it.
        with self._locked(path):
            record = self._record(path, key)
            pin = CatalogPin(record.serial, record.digest) if record is not None else None
            pems = record.authority_chain if record is not None else ()
            chain = [public_key_from_pem(pem.encode(), str(path)) for pem in pems] or [authority]
            catalog = load_catalog(folder, chain[-1], now, pin, chain[:-1])
            if catalog.handover is not None:
                chain.append(catalog.handover.new)
            if pin is None or catalog.serial > pin.serial or catalog.handover is not None:
                record = _PinRecord(
                    authority=key,
                    serial=catalog.serial,
                    digest=catalog.digest,
                    catalog=str(Path(folder).resolve()),
                    accepted_at=now,
                    authority_chain=tuple(public_key_pem(k).decode() for k in chain) if len(chain) > 1 else (),
                )
                self._write(path, record)
        return catalog

    @contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        lock_path = path.with_name(f".{path.name}.lock")
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            handle = lock_path.open("a")
        except OSError as exc:
            raise PinFileError(f"{lock_path}: cannot open the catalog pin lock: {exc.strerror}") from exc
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            yield

    def _read(self, path: Path, key: str) -> CatalogPin | None:
        record = self._record(path, key)
        return CatalogPin(record.serial, record.digest) if record is not None else None

    def _record(self, path: Path, key: str) -> _PinRecord | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PinFileError(f"{path}: cannot read the catalog pin: {exc.strerror}") from exc
        try:
            record = _PinRecord.model_validate_json(raw, strict=True)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise PinFileError(
                f"{path}: not a catalog pin ({where + ': ' if where else ''}{first['msg']}). It is never reset "
                f"silently; find out what changed it, then delete it to pin the next catalog accepted"
            ) from exc
        if record.authority != key:
            raise PinFileError(f"{path}: pins authority {record.authority}, not {key} as its name says")
        return record

    def _write(self, path: Path, record: _PinRecord) -> None:
        try:
            # Without a rotation the file is as it always was, so older software still reads it.
            unused = {"authority_chain"} if not record.authority_chain else None
            write_atomically(path, record.model_dump_json(indent=2, exclude=unused) + "\n")
            # The rename is durable only once the folder is: a pin lost in a power cut would let a rollback in.
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise PinFileError(f"{path}: cannot write the catalog pin: {exc.strerror}") from exc
