"""Orders and custody through the parts' named queries: what the reconciliation report and `reflash orders list`
read, as typed records."""

from __future__ import annotations

import pytest

from station.orders import OrderRequest
from station.outcome import Outcome
from station.store import (
    Charge,
    CustodyEvent,
    OrderKind,
    OrderProgress,
    OrderState,
    OutboxState,
    Store,
    StoreError,
)
from tests.station.conftest import RunJob, hub_id


def test_an_order_from_import_to_close_as_records(store: Store, run_job: RunJob) -> None:
    request = OrderRequest("DCC-7", "dcc", "SUPPLIER-A", "North", [(hub_id(2), 3), (hub_id(1), 2)], "o.csv", "0" * 64)
    store.import_order(request)
    assert store.receive("DCC-7", hub_id(1))
    assert not store.receive("DCC-7", hub_id(9))  # unasked: recorded and held
    job = run_job(hub_id(1), "DCC-7")

    order = store.order_book.order("DCC-7")
    assert (order.kind, order.state, order.requesting_party, order.closed_at) == (
        OrderKind.DCC, OrderState.OPEN, "SUPPLIER-A", None,
    )  # fmt: skip
    assert store.order_book.hubs("DCC-7") == [hub_id(1), hub_id(2)]  # by line in the file
    assert store.order_book.progress() == [OrderProgress(order, hubs=2, processed=1)]
    assert store.job_ledger.charges(order_ref="DCC-7") == [
        Charge("DCC-7", hub_id(1), job.id, Outcome.REFLASHED, 980, "GBP")
    ]
    assert store.dispatch("DCC-7", hub_id(1)) == "REFLASHED"
    assert store.dispatch("DCC-7", hub_id(9)) == "UNASKED"
    events = [(e.chf_id, e.event, e.asked) for e in store.custody.events("DCC-7")]
    assert events == [
        (hub_id(1), CustodyEvent.RECEIVED, True),
        (hub_id(9), CustodyEvent.RECEIVED, False),
        (hub_id(1), CustodyEvent.ON_BENCH, True),
        (hub_id(1), CustodyEvent.PROCESSED, True),
        (hub_id(1), CustodyEvent.DISPATCHED, True),
        (hub_id(9), CustodyEvent.DISPATCHED, False),
    ]
    assert store.custody.scanned_in(hub_id(1), "DCC-7")
    assert not store.custody.scanned_in(hub_id(9), "DCC-7")

    assert store.order_book.open_refs() == ["DCC-7"]
    store.close_order("DCC-7", {"named": 2}, lambda message_id, closed_at: {"order_ref": "DCC-7"})
    assert store.order_book.open_refs() == []
    closed = store.order_book.order("DCC-7")
    assert closed.state is OrderState.CLOSED
    assert closed.closed_at is not None
    (summary,) = store.outbox.messages(kind="order_summary")
    assert (summary.job_id, summary.state, summary.created_at) == (None, OutboxState.PENDING, closed.closed_at)
    assert store.outbox.unsent("order_summary") == 1
    with pytest.raises(StoreError, match="is closed"):
        store.receive("DCC-7", hub_id(2))
