"""The catalog pin: the serial and digest of the newest approved-firmware catalog the station accepted, its rollback
floor, and the audit entry for every catalog it was offered, accepted or refused.

Kept in the store (not a file beside it) so the floor and the trail that explains it change in one transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from firmware_catalog.catalog import CatalogPin

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

    def record(self, accepted: bool, code: str, message: str, pin: CatalogPin | None, folder: str) -> None:
        """Catalog offers go in the audit trail either way; an accepted one also becomes the rollback floor."""
        with self._work.transaction() as session:
            if accepted and pin is not None:
                session.execute(
                    "INSERT INTO catalog_pin (id, serial, digest, accepted_at) VALUES (1, ?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET serial = excluded.serial, digest = excluded.digest, "
                    "accepted_at = excluded.accepted_at",
                    (pin.serial, pin.digest, self._work.now()),
                )
            self._audit_log.append(
                session,
                "catalog_accepted" if accepted else "catalog_refused",
                {
                    "folder": folder,
                    "code": code,
                    "message": message,
                    "serial": pin.serial if pin else None,
                    "digest": pin.digest if pin else None,
                },
            )
