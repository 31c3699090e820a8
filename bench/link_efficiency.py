"""Link efficiency of the maintenance-port transfer: image bytes delivered per second of line capacity.

    efficiency = image bytes / (elapsed seconds x baud / 10)

One run covers baud 115200 / 921600 / 3000000, latency 1 ms and 16 ms each way, a random image and a firmware-like
image (the start of a compiled binary on this machine), with our window and with stop-and-wait (window 1). Each case
is a fresh simulated hub on the emulated link; the time is the station's `transfer` call, begin-transfer included.

    python -m bench.link_efficiency [--quick] [--json] [--jobs N]

`--quick` uses 256 KiB images instead of 1 MiB. `--jobs` runs that many cases at once in one event loop (faster,
less exact on a busy machine).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from drivers.maintenance_port import SessionSettings
from firmware_catalog.hub import HubIdentity
from firmware_catalog.image import UpgradeImage, build_signed_image, parse_image
from firmware_catalog.keys import generate_key
from simulators.hub import HubOptions
from simulators.jig import SimJig
from simulators.link import LinkSettings

__all__ = ["Case", "firmware_like", "main", "run_case"]

BAUDS = (115_200, 921_600, 3_000_000)
LATENCIES_MS = (1, 16)
IMAGES = ("random", "firmware")


@dataclasses.dataclass(frozen=True)
class Case:
    baud: int
    latency_ms: int
    image: str
    window: int


def firmware_like(size: int) -> tuple[bytes, str]:
    """The first `size` bytes of a compiled binary found on this machine, and its path."""
    candidates = [Path(os.path.realpath(sys.executable)), Path("/usr/bin/python3.11"), Path("/usr/bin/python3")]
    candidates += sorted(Path("/usr/lib").glob("**/*.so*"))[:50]
    for path in candidates:
        try:
            data = path.read_bytes()[:size]
        except OSError:
            continue
        if len(data) == size:
            return data, str(path)
    raise SystemExit(f"no compiled binary of at least {size} bytes found")


async def run_case(case: Case, image: UpgradeImage, identity: HubIdentity, key: Any) -> dict[str, Any]:
    latency = case.latency_ms / 1000
    with tempfile.TemporaryDirectory(prefix="reflash-bench-") as state:
        hub = HubOptions(
            identity=identity,
            state_dir=Path(state),
            trusted_keys={image.manufacturer: [key.public_key()]},
            reboot_delay_s=0.0,
        )
        link = LinkSettings(baud=case.baud, latency_to_hub_s=latency, latency_to_station_s=latency)
        jig = SimJig(hub, link, dataclasses.replace(SessionSettings(), window=case.window))
        try:
            await jig.identify()
            cpu = time.process_time()
            started = time.perf_counter()
            stats = await jig.transfer(image)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu
        finally:
            await jig.close()
    return {
        "baud": case.baud,
        "latency_ms": case.latency_ms,
        "image": case.image,
        "window": case.window,
        "image_bytes": image.total_size,
        "elapsed_s": round(elapsed, 3),
        "efficiency": round(image.total_size / (elapsed * case.baud / 10), 3),
        "bytes_per_s": round(image.total_size / elapsed),
        "compression": stats.compression.name.lower(),
        "wire_bytes": stats.data_bytes,
        "retransmitted_frames": stats.retransmitted_frames,
        "cpu_s": round(cpu, 3),
    }


async def _run(size: int, jobs: int) -> tuple[list[dict[str, Any]], str]:
    key = generate_key()
    firmware, source = firmware_like(size)
    bodies = {"random": os.urandom(size), "firmware": firmware}
    images = {
        name: parse_image(
            build_signed_image(
                key,
                manufacturer=0x1072,
                image_type=0x0102,
                file_version=0x04010002,
                min_hardware_version=0x0100,
                max_hardware_version=0x0200,
                manufacturer_image=body,
            )
        )
        for name, body in bodies.items()
    }
    identity = HubIdentity(manufacturer="1072", model="0102", hardware_version="0110", firmware_version="04000007")
    window = SessionSettings().window
    cases = [Case(b, lat, img, w) for b in BAUDS for lat in LATENCIES_MS for img in IMAGES for w in (window, 1)]
    gate = asyncio.Semaphore(jobs)

    async def one(case: Case) -> dict[str, Any]:
        async with gate:
            return await run_case(case, images[case.image], identity, key)

    results = await asyncio.gather(*(one(c) for c in cases))
    return list(results), source


def _table(results: list[dict[str, Any]]) -> str:
    head = "| baud | latency ms | image | window | efficiency | bytes/s | compression | retransmitted | CPU s |"
    rows = [head, "|" + "---|" * 9]
    for r in results:
        rows.append(
            f"| {r['baud']} | {r['latency_ms']} | {r['image']} | {r['window']} | {r['efficiency']:.3f} | "
            f"{r['bytes_per_s']} | {r['compression']} | {r['retransmitted_frames']} | {r['cpu_s']:.2f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="256 KiB images instead of 1 MiB")
    parser.add_argument("--json", action="store_true", help="print the cases as a JSON list")
    parser.add_argument("--jobs", type=int, default=1, help="cases run at once (default 1)")
    args = parser.parse_args(argv)
    size = (256 if args.quick else 1024) * 1024
    results, source = asyncio.run(_run(size, max(1, args.jobs)))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, {platform.machine()}, Python "
        f"{platform.python_version()}, images of {size // 1024} KiB (firmware-like: {source}), jobs {args.jobs}"
    )
    print(_table(results))


if __name__ == "__main__":
    main()
