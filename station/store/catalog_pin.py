"""The catalog pin: the serial and digest of the newest approved-firmware catalog the station accepted, its rollback
floor, the catalog authority keys it came to trust by handovers, and the audit entry for every catalog it was
offered, accepted or refused.

Kept in the store (not a file beside it) so the floor and the trail that explains it change in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import ec

from firmware_catalog.catalog import CatalogPin
from firmware_catalog.keys import fingerprint, public_key_from_pem, public_key_pem

if TYPE_CHECKING:
    from station.store.audit_log import AuditLog
    from station.store.unit_of_work import UnitOfWork

__all__ = ["PinnedCatalog"]


class PinnedCatalog:
    """The station's catalog rollback floor."""

    def __init__(self, work: UnitOfWork, audit_log: AuditLog) -> None:
        self._work = work
        self._audit_log = audit_log

    def pin(self) -> CatalogPin | None:
        row = self._work.reader().execute("SELECT serial, digest FROM catalog_pin WHERE id = 1").fetchone()
        return CatalogPin(row["serial"], row["digest"]) if row else None

    def authority_chain(self) -> list[ec.EllipticCurvePublicKey]:
        """The catalog authority keys trusted in turn by handovers, oldest first; empty before any handover."""
        row = self._work.reader().execute("SELECT authority_chain FROM catalog_pin WHERE id = 1").fetchone()
        if row is None or row["authority_chain"] is None:
            return []
        return [
            public_key_from_pem(pem.encode(), "catalog_pin.authority_chain")
            for pem in json.loads(row["authority_chain"])
        ]

    def record(
        self,
        accepted: bool,
        code: str,
        message: str,
        pin: CatalogPin | None,
        folder: str,
        authority_chain: Sequence[ec.EllipticCurvePublicKey] | None = None,
    ) -> None:
        """Catalog offers go in the audit trail either way; an accepted one also becomes the rollback floor.

        `authority_chain` is the holder's chain of authority keys after the offer: longer than one key, it pins the
        newest (an accepted handover); one key, the configured key alone is in force; None leaves the chain pinned."""
        data: dict[str, Any] = {
            "folder": folder,
            "code": code,
            "message": message,
            "serial": pin.serial if pin else None,
            "digest": pin.digest if pin else None,
        }
        with self._work.transaction() as session:
            if accepted and pin is not None:
                row = session.execute("SELECT authority_chain FROM catalog_pin WHERE id = 1").fetchone()
                chain = row["authority_chain"] if row is not None else None
                if authority_chain is not None:
                    pems = [public_key_pem(key).decode() for key in authority_chain]
                    new_chain = json.dumps(pems) if len(pems) > 1 else None
                    if new_chain is not None and new_chain != chain:
                        data["authority_handover"] = {
                            "old": fingerprint(authority_chain[-2]),
                            "new": fingerprint(authority_chain[-1]),
                        }
                    chain = new_chain
                session.execute(
                    "INSERT INTO catalog_pin (id, serial, digest, accepted_at, authority_chain) VALUES (1, ?, ?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET serial = excluded.serial, digest = excluded.digest, "
                    "accepted_at = excluded.accepted_at, authority_chain = excluded.authority_chain",
                    (pin.serial, pin.digest, self._work.now(), chain),
                )
            self._audit_log.append(session, "catalog_accepted" if accepted else "catalog_refused", data)
