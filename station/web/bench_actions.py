"""What an operator does at the bench page or a line controller through the API: scan a hub in, dispatch a finished
hub, release an UNEXPECTED hub, close an order, reload the catalog. Each is one store transaction and one audit
entry naming the operator who did it (`Store.acting_as`), and every input passes the identifier grammar and EUI-64
normalisation first. An action returns an `ActionResult` whose message is for the operator's eyes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_catalog.catalog import Offer
from firmware_catalog.eui64 import normalise_eui64
from station.config import StationConfig
from station.identifier import check_order_ref
from station.store import Role, Store, StoreError

__all__ = ["ActionResult", "BenchActions", "Principal"]


@dataclass(frozen=True)
class Principal:
    """Who asks: an operator signed in at the page, or a line controller's API token (by its name)."""

    name: str
    role: Role
    via: str  # "page" or "token"


@dataclass(frozen=True)
class ActionResult:
    ok: bool
    # received, received_unasked, dispatched, released, closed, catalog_accepted, catalog_refused, misread, refused,
    # forbidden
    result: str
    message: str
    chf_id: str | None = None
    order_ref: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "result": self.result, "message": self.message, "chf_id": self.chf_id,
                "order_ref": self.order_ref}  # fmt: skip


class BenchActions:
    def __init__(
        self,
        store: Store,
        config: StationConfig,
        on_change: Callable[[], None],
        offer_catalog: Callable[[], Offer] | None = None,
    ) -> None:
        self._store = store
        self._config = config
        self._on_change = on_change  # the page's order view and the reporter (an order summary to publish)
        self._offer_catalog = offer_catalog  # the station's: offer the catalog folder again and record it

    def _hub(self, scanned: str, order_ref: str | None) -> tuple[str, str]:
        """The normalised CHF ID, and its order: the open order that names it, else `order_ref`."""
        chf_id = normalise_eui64(scanned.strip())
        found = self._store.open_order_for(chf_id) or (check_order_ref(order_ref) if order_ref else None)
        if found is None:
            raise StoreError(f"no open order names hub {chf_id}: choose the order it came in")
        return chf_id, found

    def _do(self, who: Principal, needed: Role, work: Callable[[], ActionResult]) -> ActionResult:
        if not who.role.may(needed):
            return ActionResult(False, "forbidden", f"{who.name} is an {who.role.value}: only a {needed.value} may")
        try:
            with self._store.acting_as(who.name):
                result = work()
        except ValueError as exc:
            return ActionResult(False, "misread", str(exc))
        except StoreError as exc:
            return ActionResult(False, "refused", str(exc))
        self._on_change()
        return result

    def scan_in(self, who: Principal, scanned: str, order_ref: str | None) -> ActionResult:
        def work() -> ActionResult:
            chf_id, ref = self._hub(scanned, order_ref)
            if self._store.receive(ref, chf_id):
                return ActionResult(True, "received", f"{chf_id} received in order {ref}", chf_id, ref)
            return ActionResult(True, "received_unasked", f"{chf_id} received UNASKED: order {ref} does not name "
                                "it; hold it", chf_id, ref)  # fmt: skip

        return self._do(who, Role.OPERATOR, work)

    def dispatch(self, who: Principal, scanned: str, order_ref: str | None) -> ActionResult:
        def work() -> ActionResult:
            chf_id, ref = self._hub(scanned, order_ref)
            outcome = self._store.dispatch(ref, chf_id)
            return ActionResult(True, "dispatched", f"{chf_id} dispatched ({outcome}) from order {ref}", chf_id, ref)

        return self._do(who, Role.OPERATOR, work)

    def release(self, who: Principal, scanned: str) -> ActionResult:
        def work() -> ActionResult:
            chf_id = normalise_eui64(scanned.strip())
            job_id = self._store.release(chf_id)
            return ActionResult(True, "released", f"{chf_id} released (UNEXPECTED, job {job_id}): it may leave",
                                chf_id)  # fmt: skip

        return self._do(who, Role.SUPERVISOR, work)

    def close_order(self, who: Principal, order_ref: str) -> ActionResult:
        from station.messages import order_summary
        from station.reconciliation import order_report, write_report

        def work() -> ActionResult:
            ref = check_order_ref(order_ref)
            report = order_report(self._store, ref)
            section = self._config.station

            def summary(message_id: str, closed_at: str) -> dict[str, Any]:
                return order_summary(report, message_id, station=section.id, region=section.region,
                                     closed_at=closed_at)  # fmt: skip

            self._store.close_order(ref, report["totals"], summary)
            json_path, _ = write_report(order_report(self._store, ref), self._config.resolve(Path("reports")))
            return ActionResult(True, "closed", f"order {ref} closed; report {json_path.name}", None, ref)

        return self._do(who, Role.SUPERVISOR, work)

    def reload_catalog(self, who: Principal) -> ActionResult:
        """Offer the catalog folder again, as SIGHUP does; the offer's audit entry names who asked."""
        offer_catalog = self._offer_catalog
        if offer_catalog is None:
            return ActionResult(False, "refused", "this station cannot reload its catalog from here")

        def work() -> ActionResult:
            offer = offer_catalog()
            if offer.accepted:
                return ActionResult(
                    True, "catalog_accepted", f"catalog serial {offer.serial} in force ({offer.message})"
                )
            return ActionResult(False, "catalog_refused", f"catalog refused ({offer.code.value}: {offer.message}); "
                                "the one in force stays")  # fmt: skip

        try:
            return self._do(who, Role.SUPERVISOR, work)
        except self._store.write_errors:
            return ActionResult(False, "refused", "the catalog was offered, but the store could not record it: "
                                "try again when the disk has space")  # fmt: skip
