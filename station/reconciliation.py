"""The reconciliation report of one order: what the DCC and the Change Sub-Committee asked to see.

Per hub: outcome and reason, firmware before and after, when and where it was done, the charge. Then the hubs the
order named that never arrived, and the hubs that arrived unasked. Written as JSON and CSV on close; printable at
any time.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

from station.atomic_file import write_atomically
from station.store import JobState, Store

__all__ = ["CSV_COLUMNS", "order_report", "report_csv", "write_report"]

CSV_COLUMNS = (
    "chf_id",
    "gpf_id",
    "status",
    "outcome",
    "reason",
    "firmware_before",
    "firmware_after",
    "finished_at",
    "slot",
    "station",
    "charge",
    "currency",
    "received_at",
    "dispatched_at",
)


def _money(pence: int) -> str:
    return f"{pence // 100}.{pence % 100:02d}"


def order_report(store: Store, ref: str) -> dict[str, Any]:
    order = store.order(ref)
    named = store.order_book.hubs(ref)
    custody: dict[str, dict[str, str]] = {}
    unasked: set[str] = set()
    for event in store.custody.events(ref):
        custody.setdefault(event.chf_id, {}).setdefault(event.event.value, event.at)
        if not event.asked:
            unasked.add(event.chf_id)
    jobs = {job.chf_id: job for job in store.jobs(order_ref=ref) if job.state == JobState.FINAL}
    charges = {charge.chf_id: charge for charge in store.job_ledger.charges(order_ref=ref)}
    named_set = set(named)
    unasked |= {chf for chf in jobs if chf not in named_set}

    def line(chf_id: str) -> dict[str, Any]:
        job = jobs.get(chf_id)
        events = custody.get(chf_id, {})
        charge = charges.get(chf_id)
        if job is not None:
            status = "processed"
        elif "received" in events or "on_bench" in events:
            status = "received"
        else:
            status = "never_received"
        return {
            "chf_id": chf_id,
            "gpf_id": job.gpf_id if job else None,
            "status": status,
            "outcome": job.outcome.value if job and job.outcome else None,
            "reason": job.reason if job else None,
            "firmware_before": job.firmware_before if job else None,
            "firmware_after": job.firmware_after if job else None,
            "finished_at": job.finished_at if job else None,
            "slot": job.slot if job else None,
            "station": store.actor.station if job else None,
            "charge": _money(charge.amount_pence) if charge else None,
            "currency": charge.currency if charge else None,
            "received_at": events.get("received"),
            "dispatched_at": events.get("dispatched"),
        }

    hubs = [line(chf) for chf in named]
    extra = [line(chf) for chf in sorted(unasked)]
    total = sum(charge.amount_pence for charge in charges.values())
    currencies = sorted({charge.currency for charge in charges.values()})
    return {
        "order_ref": ref,
        "kind": order.kind.value,
        "requesting_party": order.requesting_party,
        "region": order.region,
        "state": order.state.value,
        "imported_at": order.imported_at,
        "closed_at": order.closed_at,
        "station": store.actor.station,
        "facility": store.actor.facility,
        "hubs": hubs,
        "never_received": [h["chf_id"] for h in hubs if h["status"] == "never_received"],
        "unasked": extra,
        "totals": {
            "named": len(named),
            "processed": sum(1 for h in hubs if h["status"] == "processed"),
            "outcomes": dict(sorted(Counter(h["outcome"] for h in hubs + extra if h["outcome"]).items())),
            "charge": _money(total),
            "currency": currencies[0] if len(currencies) == 1 else ("/".join(currencies) or None),
        },
    }


def report_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["order_ref", "asked", *CSV_COLUMNS], lineterminator="\n")
    writer.writeheader()
    for asked, hubs in ((True, report["hubs"]), (False, report["unasked"])):
        for hub in hubs:
            writer.writerow({"order_ref": report["order_ref"], "asked": "yes" if asked else "no", **hub})
    return out.getvalue()


def write_report(report: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in report["order_ref"])
    json_path, csv_path = folder / f"{stem}.json", folder / f"{stem}.csv"
    write_atomically(json_path, json.dumps(report, indent=2) + "\n")
    write_atomically(csv_path, report_csv(report))
    return json_path, csv_path
