"""Hubs that lie, hold stale bytes, or are swapped mid-job, through the whole station job (in-process bench, real
store, real signed catalog): none is recorded REFLASHED unless it proved it runs the catalog's image, each gets the
reason code the docs give, and what the DSP would be told (`firmware_after`) is true of the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drivers.jig_driver import JigDriver, VersionInfo
from drivers.maintenance_port import SessionSettings
from firmware_catalog.catalog import Catalog, load_catalog
from firmware_catalog.hub import HubIdentity
from firmware_catalog.image import UpgradeImage, build_signed_image, read_image
from firmware_catalog.keys import load_private_key, load_public_key
from simulators.fault import parse_faults
from simulators.hub import HubOptions, stage_bytes
from simulators.jig import SimJig
from simulators.link import LinkSettings
from station.audit import verify_chain
from station.bench import Bench
from station.config import JobSettings, Tariff
from station.demo import DemoWorld, build_demo_world
from station.job import JobContext
from station.orders import OrderRequest
from station.showcase import hub_running_version
from station.store import Store
from tests.station.conftest import ACTOR, hub_id, import_and_scan_in

BEFORE, TARGET = "01000000", "01020000"
ORDER = "DCC-HOSTILE"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> DemoWorld:
    return build_demo_world(tmp_path_factory.mktemp("hostile") / "world")


@pytest.fixture(scope="module")
def catalog(world: DemoWorld) -> Catalog:
    return load_catalog(world.catalog_dir, load_public_key(world.authority_pub), datetime.now(UTC))


def target_image(catalog: Catalog) -> UpgradeImage:
    (entry,) = [e for e in catalog.document.entries if e.firmware_version == TARGET and e.manufacturer == "121D"]
    return read_image(catalog.folder / entry.image)


def revoked_twin(world: DemoWorld, image: UpgradeImage, key: str = "retired", header: str | None = None) -> bytes:
    """The same Manufacturer Image and size, signed by the catalog's revoked key (or `key`), with the header string
    given: another envelope of the same firmware."""
    twin = build_signed_image(
        load_private_key(world.key(f"{key}.key")),
        manufacturer=image.manufacturer, image_type=image.image_type, file_version=image.file_version,
        min_hardware_version=image.min_hardware_version, max_hardware_version=image.max_hardware_version,
        manufacturer_image=image.manufacturer_image, control=image.control, stack_version=image.stack_version,
        header_string=image.header_string if header is None else header,
    )  # fmt: skip
    assert len(twin) == image.total_size
    assert twin != image.raw
    return twin


def stage(state: Path, raw: bytes, image: UpgradeImage) -> None:
    """Put `raw` in a hub's staging slot as what it holds of `image` (keyed by image's hashes, as the hub was told)."""
    stage_bytes(
        state,
        raw,
        total_size=image.total_size,
        sha256=image.manufacturer_image_sha256,
        image_sha256=image.upgrade_image_sha256,
    )


def identity(n: int, firmware: str = BEFORE) -> HubIdentity:
    return HubIdentity(
        manufacturer="121D", model="0000", hardware_version="1200", firmware_version=firmware,
        chf_id=hub_id(n), gpf_id=hub_id(n + 1000),
    )  # fmt: skip


def sim_jig(world: DemoWorld, state: Path, n: int, fault: str = "", swap_to: HubOptions | None = None) -> SimJig:
    options = hub_options(world, state, identity(n), fault)
    settings = SessionSettings(reply_timeout_s=0.3, activate_timeout_s=2.0)
    return SimJig(options, LinkSettings(baud=3_000_000), settings, swap_to=swap_to)


def hub_options(world: DemoWorld, state: Path, ident: HubIdentity, fault: str = "") -> HubOptions:
    trusted = {0x121D: [load_public_key(world.key("maker-121D.pub"))]}
    return HubOptions(ident, state, trusted, parse_faults(fault), reboot_delay_s=0.01)


def run_bench(store: Store, catalog: Catalog, drivers: dict[str, JigDriver], hubs: list[int]) -> None:
    if store.open_order_for(hub_id(hubs[0])) is None:
        asked = [(hub_id(n), i + 2) for i, n in enumerate(hubs)]
        import_and_scan_in(store, OrderRequest(ORDER, "dcc", "SUPPLIER-A", "North", asked, "hostile.csv", "0" * 64))
    ctx = JobContext(
        store=store, catalog=lambda: catalog, tariff=Tariff(), station=ACTOR.station, region="North",
        settings=JobSettings(retry_backoff_s=0.05, readback_tries=4, readback_interval_s=0.1, link_retries=2),
        emit=lambda event, **fields: None,
    )  # fmt: skip
    asyncio.run(Bench(drivers, ctx).run(once=True))


def events(store: Store, job_id: int, kind: str) -> list[dict[str, object]]:
    return [e.data for e in store.audit_entries() if e.kind == kind and e.data.get("job_id") == job_id]


def running_envelope(state: Path) -> bytes:
    """The bytes a simulated hub really runs: its active slot on disk (the station never writes there). A lying
    hub's `running_version` in its state is what it claims; the active slot is what it boots."""
    active = json.loads((state / "state.json").read_text())["active_slot"]
    slot = state / f"slot-{active}.bin"
    return slot.read_bytes() if slot.exists() else b""


def hub_runs(state: Path, initial: str = BEFORE) -> str:
    """The version an honest simulated hub runs (its state on disk, or its identity's before it wrote any)."""
    return hub_running_version(state, initial)


LIARS = [
    # (fault, reason): hubs whose every answer looks right but who do not hold or run the image.
    ("no-store,echo-hash", "HUB_PROOF_FAILED"),
    ("claim-full-resume,echo-hash", "HUB_PROOF_FAILED"),
    ("claim-full-resume,echo-hash,no-store", "HUB_PROOF_FAILED"),
    ("echo-hash", "RUNNING_IMAGE_UNPROVEN"),
]


@pytest.mark.parametrize(("fault", "reason"), LIARS, ids=[f for f, _ in LIARS])
def test_a_hub_that_lies_is_never_reflashed(
    tmp_path: Path, world: DemoWorld, catalog: Catalog, store: Store, fault: str, reason: str
) -> None:
    state = tmp_path / "hub"
    run_bench(store, catalog, {"A1": sim_jig(world, state, 1, fault)}, [1])
    (job,) = store.jobs()
    assert (job.state, job.outcome, job.reason) == ("final", "QUARANTINED", reason)
    assert running_envelope(state) != target_image(catalog).raw  # it never ran the target, whatever it said
    # What the DSP is told is never the target: the version read at the end, or nothing when it cannot be trusted.
    assert job.firmware_after in (None, BEFORE)
    if reason == "RUNNING_IMAGE_UNPROVEN":
        assert job.firmware_after is None
    proofs = events(store, job.id, "proof")
    assert proofs
    assert not proofs[-1]["ok"]
    (message,) = store.outbox.messages()
    payload = json.loads(message.payload)
    assert (payload["outcome"], payload["firmware_after"]) == ("QUARANTINED", job.firmware_after)


def test_a_stale_envelope_of_the_same_mi_is_erased_and_the_catalogs_sent(
    tmp_path: Path, world: DemoWorld, catalog: Catalog, store: Store
) -> None:
    image = target_image(catalog)
    twin = revoked_twin(world, image)
    state = tmp_path / "hub"
    stage(state, twin, image)
    run_bench(store, catalog, {"A1": sim_jig(world, state, 1, "resume-by-mi")}, [1])
    (job,) = store.jobs()
    # Erasing what it held and sending the catalog's envelope is the right end: the hub now runs, byte for byte and
    # proven, the image the catalog approves, never the revoked-key twin it held.
    assert (job.outcome, job.reason, job.firmware_after) == ("REFLASHED", "REFLASHED", TARGET)
    assert running_envelope(state) == image.raw
    (ended,) = events(store, job.id, "transfer_ended")
    assert (ended["erased"], ended["resumed_from"]) == (True, 0)
    assert job.upgrade_image_sha256 == image.upgrade_image_sha256


def test_a_stale_envelope_that_survives_erase_is_quarantined(
    tmp_path: Path, world: DemoWorld, catalog: Catalog, store: Store
) -> None:
    image = target_image(catalog)
    state = tmp_path / "hub"
    stage(state, revoked_twin(world, image), image)
    run_bench(store, catalog, {"A1": sim_jig(world, state, 1, "resume-by-mi,ignore-erase")}, [1])
    (job,) = store.jobs()
    assert (job.outcome, job.reason) == ("QUARANTINED", "HUB_PROOF_FAILED")
    assert running_envelope(state) == b""  # still the factory image: nothing was ever activated
    assert not [e for e in store.audit_entries() if e.kind == "activate"]  # never told to activate


def test_a_spliced_prefix_is_erased_and_sent_from_zero(
    tmp_path: Path, world: DemoWorld, catalog: Catalog, store: Store
) -> None:
    image = target_image(catalog)
    state = tmp_path / "hub"
    # Stopped mid-transfer under an older catalog whose envelope of the same firmware had another header string:
    # the head differs from the catalog's from byte 20 on, so a resume would splice the new tail onto it.
    head = revoked_twin(world, image, key="maker-121D", header="Example CH firmware 1.2 rc")[: image.total_size // 2]
    assert head != image.raw[: len(head)]
    stage(state, head, image)
    run_bench(store, catalog, {"A1": sim_jig(world, state, 1, "resume-by-mi")}, [1])
    (job,) = store.jobs()
    assert (job.outcome, job.firmware_after) == ("REFLASHED", TARGET)
    assert running_envelope(state) == image.raw
    (ended,) = events(store, job.id, "transfer_ended")
    assert (ended["erased"], ended["resumed_from"]) == (True, 0)


def test_an_honest_resume_is_proven_and_sends_only_the_rest(
    tmp_path: Path, world: DemoWorld, catalog: Catalog, store: Store
) -> None:
    image = target_image(catalog)
    state = tmp_path / "hub"
    stage(state, image.raw[:40_000], image)
    run_bench(store, catalog, {"A1": sim_jig(world, state, 1)}, [1])
    (job,) = store.jobs()
    assert (job.outcome, job.firmware_after) == ("REFLASHED", TARGET)
    (ended,) = events(store, job.id, "transfer_ended")
    assert (ended["resumed_from"], ended["resume_proven"], ended["erased"]) == (40_000, True, False)


def test_a_hub_swapped_mid_transfer_is_noticed_and_the_new_hub_gets_its_own_job(
    tmp_path: Path, world: DemoWorld, catalog: Catalog, store: Store
) -> None:
    # Hub 2 runs a newer version than the catalog's newest: flashing it would be a downgrade.
    newer = hub_options(world, tmp_path / "hub-2", identity(2, firmware="01030000"))
    jig = sim_jig(world, tmp_path / "hub-1", 1, "swap@30000", swap_to=newer)
    run_bench(store, catalog, {"A1": jig}, [1, 2])
    jobs = {job.chf_id: job for job in store.jobs()}
    first, second = jobs[hub_id(1)], jobs[hub_id(2)]
    # The first hub's job waits for it, without an outcome: nothing about it goes to the DSP.
    assert (first.state, first.outcome) == ("interrupted", None)
    (swapped,) = [e.data for e in store.audit_entries() if e.kind == "job_interrupted" and e.data["job_id"] == first.id]
    assert swapped["code"] == "HUB_SWAPPED"
    assert (swapped["expected"]["chf_id"], swapped["found"]["chf_id"]) == (hub_id(1), hub_id(2))
    # The second hub was decided on by its own identity, and left alone.
    assert (second.state, second.outcome, second.reason) == ("final", "REFUSED", "DOWNGRADE_REFUSED")
    assert second.firmware_after == "01030000"
    assert not (tmp_path / "hub-2" / "state.json").exists()  # not a byte of the first hub's image reached it
    assert [json.loads(m.payload)["chf_id"] for m in store.outbox.messages()] == [hub_id(2)]
    # The first hub still runs its old version and holds the prefix it was sent; put back, it resumes and is done.
    assert hub_runs(tmp_path / "hub-1") == BEFORE
    run_bench(store, catalog, {"A2": sim_jig(world, tmp_path / "hub-1", 1)}, [1])
    first = store.job(first.id)
    assert (first.state, first.outcome, first.firmware_after) == ("final", "REFLASHED", TARGET)
    (resumed,) = [e.data for e in store.audit_entries() if e.kind == "transfer_ended" and e.data["job_id"] == first.id]
    assert resumed["resume_proven"] is True
    assert isinstance(resumed["resumed_from"], int)
    assert resumed["resumed_from"] > 0
    assert verify_chain(store.audit_entries(), store.audit_checkpoints(), store.public_key).ok


def test_activation_that_completes_after_the_link_dropped_is_proven_and_reflashed(
    tmp_path: Path, world: DemoWorld, catalog: Catalog, store: Store
) -> None:
    state = tmp_path / "hub"
    run_bench(store, catalog, {"A1": sim_jig(world, state, 1, "activate-then-drop")}, [1])
    (job,) = store.jobs()
    assert (job.outcome, job.reason, job.firmware_after) == ("REFLASHED", "REFLASHED", TARGET)
    assert hub_runs(state) == TARGET
    (activate,) = events(store, job.id, "activate")
    assert activate["code"] is None  # the answer never came; the read-back and the proof decided


class _FillsDiskAfterActivate(SimJig):
    """Below our own seam: after the hub activated, the disk under the store fills up (a real ENOSPC)."""

    filler: Path

    async def read_version(self) -> VersionInfo:
        if not self.filler.exists():
            with contextlib.suppress(OSError), self.filler.open("wb") as out:
                while True:
                    out.write(b"\0" * 65536)
        return await super().read_version()


def test_a_full_disk_after_activation_resumes_to_reflashed(
    tmp_path: Path, world: DemoWorld, catalog: Catalog, small_disk: Path
) -> None:
    from station.store import Actor

    actor = Actor(ACTOR.station, ACTOR.operator, ACTOR.facility)
    store = Store(small_disk / "station.db", actor)
    state = tmp_path / "hub"
    jig = _FillsDiskAfterActivate(hub_options(world, state, identity(1)), LinkSettings(baud=3_000_000),
                                  SessionSettings(reply_timeout_s=0.3, activate_timeout_s=2.0))  # fmt: skip
    jig.filler = small_disk / "filler"
    run_bench(store, catalog, {"A1": jig}, [1])
    assert hub_runs(state) == TARGET  # the hub activated; the station could not write what happened
    (job,) = store.jobs()
    assert job.outcome is None
    store.close()
    jig.filler.unlink()  # the operator frees space and restarts the station
    store = Store(small_disk / "station.db", actor)
    try:
        assert store.interrupt_running_jobs() == [job.id]
        run_bench(store, catalog, {"A1": sim_jig(world, state, 1)}, [1])
        job = store.job(job.id)
        assert (job.outcome, job.reason, job.firmware_after) == ("REFLASHED", "REFLASHED", TARGET)
        assert [e for e in store.audit_entries() if e.kind == "resumed_after_activation"]
        charge = store.job_ledger.charges()
        assert [line.outcome for line in charge] == ["REFLASHED"]
    finally:
        store.close()


def test_an_unexpected_hub_is_reported_once_and_processed_once_an_order_names_it(
    tmp_path: Path, world: DemoWorld, catalog: Catalog, store: Store
) -> None:
    state = tmp_path / "hub"
    ctx = JobContext(
        store=store, catalog=lambda: catalog, tariff=Tariff(), station=ACTOR.station, region="North",
        settings=JobSettings(retry_backoff_s=0.05, readback_tries=4, readback_interval_s=0.1),
        emit=lambda event, **fields: None,
    )  # fmt: skip
    for _ in range(2):  # the station restarted, or the hub was re-seated: no second report
        asyncio.run(Bench({"A1": sim_jig(world, state, 7)}, ctx).run(once=True))
    (job,) = store.jobs()
    assert (job.outcome, job.order_ref) == ("UNEXPECTED", None)
    assert len(store.outbox.messages()) == 1
    run_bench(store, catalog, {"A1": sim_jig(world, state, 7)}, [7])  # an order names it now
    jobs = store.jobs()
    assert [(j.outcome, j.order_ref) for j in jobs] == [("UNEXPECTED", None), ("REFLASHED", ORDER)]
