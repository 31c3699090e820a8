"""One order at a glance, as the bench page and `GET /api/v1/orders/{ref}` show it: the hubs it asked for, those
received, done by outcome, dispatched, and still missing (from its reconciliation report)."""

from __future__ import annotations

from typing import Any

from station.reconciliation import order_report
from station.store import Store
from station.web.openapi import OrderGlance

__all__ = ["current_order", "open_orders", "order_glance"]


def order_glance(store: Store, ref: str) -> dict[str, Any]:
    report = order_report(store, ref)
    hubs = report["hubs"]
    return OrderGlance(
        order_ref=ref,
        state=report["state"],
        kind=report["kind"],
        region=report["region"],
        asked=len(hubs),
        received=sum(1 for h in hubs if h["received_at"] or h["status"] == "processed"),
        done=report["totals"]["processed"],
        outcomes=report["totals"]["outcomes"],
        dispatched=sum(1 for h in hubs + report["unasked"] if h["dispatched_at"]),
        missing=len(report["never_received"]),
        unasked=len(report["unasked"]),
    ).model_dump(mode="json")


def open_orders(store: Store) -> list[str]:
    """The open orders, oldest first."""
    return store.order_book.open_refs()


def current_order(store: Store, wanted: str | None = None) -> str | None:
    """The order the bench page shows: `wanted` if it is open (the operator chose it), else the newest open one."""
    refs = open_orders(store)
    if wanted in refs:
        return wanted
    return refs[-1] if refs else None
