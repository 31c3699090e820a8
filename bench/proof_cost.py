"""What proof of possession (PROVE/PROOF, protocol 2) costs on the link, against the transfer it protects.

For a 1 MiB image at 921600 baud with 1 ms and 16 ms adapter latency each way, on the emulated link with a simulated
hub: the bytes each proof puts on the wire both ways, its round trips, its time as the station sees it, and the time
a whole flash (station/flash.py `flash_image`, the station's own sequence) takes with its two proofs (staged before
ACTIVATE, running after), plus a resume proof over half the image. "HMAC ms" is this machine's time to compute one MAC
over the bytes proved (each end computes one).

    python -m bench.proof_cost [--json] [--size KIB]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from drivers.frame import ProofRegion, proof_mac
from drivers.jig_driver import ImageRegion, Proof
from drivers.maintenance_port import MaintenancePort, SessionSettings
from firmware_catalog.hub import HubIdentity
from firmware_catalog.image import UpgradeImage, build_signed_image, parse_image
from firmware_catalog.keys import generate_key
from simulators.hub import HubOptions, stage_bytes
from simulators.jig import SimJig
from simulators.link import LinkSettings
from station.config import JobSettings
from station.flash import QuietObserver, flash_image
from station.outcome import Outcome

__all__ = ["main", "measure"]

BAUD = 921_600
LATENCIES_MS = (1, 16)


class _TimedJig(SimJig):
    """SimJig that keeps the time each proof took inside flash_image()."""

    proof_s: list[float]

    async def prove(self, image: UpgradeImage, region: ImageRegion) -> Proof:
        started = time.perf_counter()
        try:
            return await super().prove(image, region)
        finally:
            self.proof_s.append(time.perf_counter() - started)


def _wire(jig: SimJig) -> tuple[int, int]:
    return (
        sum(link.station_end.bytes_written for link in jig.links),
        sum(link.hub_end.bytes_written for link in jig.links),
    )


async def _prove_row(
    what: str, port: MaintenancePort, jig: SimJig, image: UpgradeImage, region: ProofRegion, length: int, ms: int
) -> dict[str, Any]:
    sent, received = _wire(jig)
    started = time.perf_counter()
    proof = await port.prove(image.raw, region, 0, length)
    elapsed = time.perf_counter() - started
    sent_after, received_after = _wire(jig)
    assert proof.ok, what
    cpu = time.perf_counter()
    proof_mac(secrets.token_bytes(16), region, 0, length, image.raw[:length])
    cpu = time.perf_counter() - cpu
    return {
        "case": what,
        "latency_ms": ms,
        "bytes_proved": length,
        "to_hub_bytes": sent_after - sent,
        "to_station_bytes": received_after - received,
        "round_trips": 1,
        "elapsed_ms": round(elapsed * 1000, 1),
        "hmac_ms": round(cpu * 1000, 2),
    }


async def measure(size: int) -> list[dict[str, Any]]:
    key = generate_key()
    image = parse_image(
        build_signed_image(
            key,
            manufacturer=0x1072,
            image_type=0x0102,
            file_version=0x04010002,
            min_hardware_version=0x0100,
            max_hardware_version=0x0200,
            manufacturer_image=os.urandom(size - 126),
        )
    )
    identity = HubIdentity(manufacturer="1072", model="0102", hardware_version="0110", firmware_version="04000007")
    rows: list[dict[str, Any]] = []
    for ms in LATENCIES_MS:
        link = LinkSettings(baud=BAUD, latency_to_hub_s=ms / 1000, latency_to_station_s=ms / 1000)
        with tempfile.TemporaryDirectory(prefix="reflash-proof-") as state:
            half = image.total_size // 2
            stage_bytes(
                state,
                image.raw[:half],
                total_size=image.total_size,
                sha256=image.manufacturer_image_sha256,
                image_sha256=image.upgrade_image_sha256,
            )
            hub = HubOptions(
                identity=identity,
                state_dir=Path(state),
                trusted_keys={image.manufacturer: [key.public_key()]},
                reboot_delay_s=0.0,
            )
            jig = _TimedJig(hub, link, SessionSettings())
            jig.proof_s = []
            try:
                port = await jig.session()
                staged = ProofRegion.STAGED
                rows.append(await _prove_row("resume proof (staged, half)", port, jig, image, staged, half, ms))
                await port.transfer(image)
                whole = image.total_size
                rows.append(await _prove_row("staged proof (whole)", port, jig, image, staged, whole, ms))
                await port.erase()
                jig.expect(await jig.identify())  # as the station's job does: the hub it scanned in
                observer = QuietObserver()
                started = time.perf_counter()
                ending = await flash_image(jig, image, JobSettings(), observer)
                elapsed = time.perf_counter() - started
                assert ending.outcome == Outcome.REFLASHED, ending
                port = await jig.session()
                running = ProofRegion.RUNNING
                rows.append(await _prove_row("running proof (whole)", port, jig, image, running, whole, ms))
            finally:
                await jig.close()
        proofs = sum(jig.proof_s)
        rows.append(
            {
                "case": "flash_image() total",
                "latency_ms": ms,
                "bytes_proved": 2 * image.total_size,
                "round_trips": 2,
                "elapsed_ms": round(elapsed * 1000, 1),
                "proofs_ms": round(proofs * 1000, 1),
                "proof_share": round(proofs / elapsed, 4),
                "data_bytes": sum(ended["data_bytes"] for ended in observer.of("transfer_ended")),
            }
        )
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    head = "| case | latency ms | bytes proved | to hub B | to station B | round trips | elapsed ms | HMAC ms | note |"
    out = [head, "|" + "---|" * 9]
    for r in rows:
        note = r.get("note", "")
        if r["case"] == "flash_image() total":
            note = f"of which the 2 proofs {r['proofs_ms']} ms ({r['proof_share']:.2%}); DATA bytes {r['data_bytes']}"
        out.append(
            f"| {r['case']} | {r['latency_ms']} | {r['bytes_proved']} | {r.get('to_hub_bytes', '')} | "
            f"{r.get('to_station_bytes', '')} | {r['round_trips']} | {r['elapsed_ms']} | {r.get('hmac_ms', '')} | "
            f"{note} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    parser.add_argument("--size", type=int, default=1024, help="image size in KiB (default 1024)")
    args = parser.parse_args(argv)
    rows = asyncio.run(measure(args.size * 1024))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, {platform.machine()}, Python "
        f"{platform.python_version()}, {args.size} KiB random image, {BAUD} baud"
    )
    print(_table(rows))


if __name__ == "__main__":
    main()
