"""An order of 24 hubs over a simulated bench: mixed firmware, a few faults, every outcome, the report, the charges."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.jig_driver import JigDriver
from drivers.maintenance_port import SessionSettings
from firmware_catalog.catalog import load_catalog
from firmware_catalog.hub import HubIdentity
from firmware_catalog.keys import load_public_key
from simulators.fault import parse_faults
from simulators.hub import HubOptions
from simulators.jig import SimJig
from simulators.link import LinkSettings
from station.audit import verify_chain
from station.bench import Bench
from station.config import JobSettings, Tariff
from station.demo import DemoWorld, build_demo_world
from station.job import JobContext
from station.orders import OrderRequest
from station.reconciliation import order_report
from station.store import Store
from tests.station.conftest import ACTOR, hub_id


@dataclass(frozen=True)
class Hub:
    n: int
    mfr: str
    model: str
    hw: str
    fw: str
    outcome: str
    reason: str
    after: str | None
    fault: str = ""
    in_order: bool = True


HUBS = [
    *(Hub(n, "121D", "0000", "1200", "01000000", "REFLASHED", "REFLASHED", "01020000") for n in range(1, 9)),
    *(Hub(n, "121D", "0000", "1111", "01010000", "REFLASHED", "REFLASHED", "01020000") for n in range(9, 12)),
    *(Hub(n, "1072", "0102", "0150", "04000007", "REFLASHED", "REFLASHED", "04000010") for n in range(12, 16)),
    Hub(16, "121D", "0000", "1200", "01020000", "ALREADY_CURRENT", "ALREADY_CURRENT", "01020000"),
    Hub(17, "121D", "0000", "1300", "01000000", "REFUSED", "HARDWARE_OUT_OF_RANGE", None),
    Hub(18, "1072", "0200", "0100", "05000000", "REFUSED", "UNTRUSTED_KEY", None),
    Hub(19, "1072", "0300", "0100", "06000001", "SCRAP", "TARGET_PAST_IVP", None),
    Hub(20, "121D", "0000", "1200", "01000000", "REFLASHED", "REFLASHED", "01020000", "power-loss@3000"),
    Hub(21, "121D", "0000", "1200", "01000000", "QUARANTINED", "ACTIVATION_FAILURE", None, "activation-fail"),
    Hub(22, "121D", "0000", "1200", "01000000", "FAILED", "TRANSFER_REFUSED_BY_HUB", None, "refuse-image"),
    Hub(23, "121D", "0000", "1200", "01000000", "QUARANTINED", "VERSION_NOT_TARGET_AFTER_ACTIVATE", None,
        "old-version-after-reboot"),
    Hub(24, "121D", "0000", "1200", "01000000", "UNEXPECTED", "NOT_IN_OPEN_ORDER", None, in_order=False),
]  # fmt: skip
TARIFF = Tariff(REFLASHED=Decimal("9.80"), ALREADY_CURRENT=Decimal("2.00"), SCRAP=Decimal("1.50"))


def sim_jig(world: DemoWorld, hub: Hub, state: Path, *, baud: int = 3_000_000) -> SimJig:
    identity = HubIdentity(
        manufacturer=hub.mfr, model=hub.model, hardware_version=hub.hw, firmware_version=hub.fw,
        chf_id=hub_id(hub.n), gpf_id=hub_id(hub.n + 1000),
    )  # fmt: skip
    trusted = {
        0x121D: [load_public_key(world.key("maker-121D.pub"))],
        0x1072: [load_public_key(world.key("maker-1072.pub"))],
    }
    options = HubOptions(identity, state / f"hub-{hub.n}", trusted, parse_faults(hub.fault), reboot_delay_s=0.01)
    settings = SessionSettings(reply_timeout_s=0.3, activate_timeout_s=2.0)
    return SimJig(options, LinkSettings(baud=baud), settings)


@pytest.fixture
def world(tmp_path: Path) -> DemoWorld:
    return build_demo_world(tmp_path / "world")


async def test_an_order_of_24_hubs(tmp_path: Path, world: DemoWorld, store: Store) -> None:
    asked = [(hub_id(h.n), i + 2) for i, h in enumerate(HUBS) if h.in_order]
    store.import_order(OrderRequest("DCC-E2E", "dcc", "SUPPLIER-A", "North", asked, "e2e.csv", "0" * 64))
    for chf, _ in asked:
        assert store.receive("DCC-E2E", chf)
    assert not store.receive("DCC-E2E", hub_id(24))  # scanned in with the order's box, but not asked for
    catalog = load_catalog(world.catalog_dir, load_public_key(world.authority_pub), datetime.now(UTC))
    drivers: dict[str, JigDriver] = {f"S{h.n:02d}": sim_jig(world, h, tmp_path / "hubs") for h in HUBS}
    events: list[tuple[str, dict[str, object]]] = []
    ctx = JobContext(
        store=store, catalog=lambda: catalog, tariff=TARIFF, station=ACTOR.station, region="North",
        settings=JobSettings(retry_backoff_s=0.05, readback_tries=4, readback_interval_s=0.1),
        emit=lambda event, **fields: events.append((event, fields)),
    )  # fmt: skip
    bench = Bench(drivers, ctx)
    await bench.run(once=True)

    jobs = {job.chf_id: job for job in store.jobs()}
    assert len(jobs) == len(HUBS)
    for hub in HUBS:
        job = jobs[hub_id(hub.n)]
        assert (job.state, job.outcome, job.reason) == ("final", hub.outcome, hub.reason), hub
        if hub.after:
            assert job.firmware_after == hub.after, hub
        if hub.outcome == "REFLASHED":
            assert job.hub_sha256 == job.image_sha256, hub
    power_cut = jobs[hub_id(20)]
    assert power_cut.attempts >= 2  # the first transfer died with the hub's power; the second resumed
    resumed = [a for a in store.job_ledger.attempts(power_cut.id) if a.result == "ok"]
    assert "resumed from 0" not in (resumed[0].detail or "")

    report = order_report(store, "DCC-E2E")
    assert report["totals"]["processed"] == 23
    assert report["totals"]["outcomes"]["REFLASHED"] == 16
    assert [h["chf_id"] for h in report["unasked"]] == [hub_id(24)]
    assert report["never_received"] == []
    # 16 x 9.80 + 1 x 2.00 (already current) + 1 x 1.50 (scrap)
    assert report["totals"]["charge"] == "160.30"
    charges = {charge.chf_id: charge.amount_pence for charge in store.job_ledger.charges()}
    assert len(charges) == 23
    assert charges[hub_id(16)] == 200
    assert charges[hub_id(17)] == 0

    counts = store.outbox_counts()
    assert counts["pending"] == len(HUBS)  # every result waits for the reporter, including the unexpected hub
    assert verify_chain(store.audit_entries(), store.audit_checkpoints(), store.public_key).ok
    kinds = [e.kind for e in store.audit_entries()]
    for kind in ("decision", "transfer_started", "transfer_ended", "verified", "activate", "read_back"):
        assert kind in kinds
