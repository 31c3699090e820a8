"""Link efficiency of the maintenance-port transfer: image bytes delivered per second of line capacity.

    efficiency = image bytes / (elapsed seconds x baud / 10)

One run covers baud 115200 / 921600 / 3000000, latency 1 ms and 16 ms each way, a random image and a firmware-like
image (the start of a compiled binary on this machine), with our window and with stop-and-wait (window 1). Each case
is a fresh simulated hub on the emulated link; the time is the station's `transfer` call, begin-transfer included.

The slow line: 19200 baud with a 16 KiB image (`--slow-kib`), the same latencies, images and windows, both through
the in-memory `sim` driver and through a real TCP socket to `reflash sim hub`'s server (`tcp`: the station learns
the line's rate only from the slot's `line_baud`), and a resume of the second half over TCP. "limit B/s" is the
physical limit, baud/10.

    python -m bench.link_efficiency [--quick] [--json] [--jobs N] [--slow-kib K]

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

from drivers.jig_driver import JigDriver
from drivers.maintenance_port import SessionSettings
from drivers.url_jig import UrlJig
from firmware_catalog.hub import HubIdentity
from firmware_catalog.image import UpgradeImage, build_signed_image, parse_image
from firmware_catalog.keys import generate_key
from simulators.hub import HubOptions, stage_bytes
from simulators.hub_server import HubServer
from simulators.jig import SimJig
from simulators.link import LinkSettings

__all__ = ["Case", "firmware_like", "main", "run_case"]

BAUDS = (115_200, 921_600, 3_000_000)
SLOW_BAUD = 19_200
LATENCIES_MS = (1, 16)
IMAGES = ("random", "firmware")


@dataclasses.dataclass(frozen=True)
class Case:
    baud: int
    latency_ms: int
    image: str
    window: int
    transport: str = "sim"  # sim: in-memory link; tcp: a TCP socket to the hub server
    resume: bool = False  # the hub holds the first half already


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
        half = image.total_size // 2 if case.resume else 0
        if half:
            stage_bytes(state, image.raw[:half], total_size=image.total_size,
                        sha256=image.manufacturer_image_sha256, image_sha256=image.upgrade_image_sha256)  # fmt: skip
        link = LinkSettings(baud=case.baud, latency_to_hub_s=latency, latency_to_station_s=latency)
        settings = dataclasses.replace(SessionSettings(), window=case.window)
        server = None
        jig: JigDriver
        if case.transport == "tcp":
            server = await HubServer(hub, link).serve_tcp()
            jig = UrlJig(server.url, dataclasses.replace(settings, line_baud=case.baud))
        else:
            jig = SimJig(hub, link, settings)
        try:
            await jig.identify()
            cpu = time.process_time()
            started = time.perf_counter()
            stats = await jig.transfer(image)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu
        finally:
            await jig.close()
            if server is not None:
                await server.close()
    sent = image.total_size - half
    return {
        "baud": case.baud,
        "latency_ms": case.latency_ms,
        "image": case.image,
        "window": case.window,
        "transport": case.transport,
        "resumed_from": half,
        "image_bytes": sent,
        "elapsed_s": round(elapsed, 3),
        "limit_bytes_per_s": case.baud // 10,
        "efficiency": round(sent / (elapsed * case.baud / 10), 3),
        "bytes_per_s": round(sent / elapsed),
        "compression": stats.compression.name.lower(),
        "wire_bytes": stats.data_bytes,
        "frames": stats.frames,
        "retransmitted_frames": stats.retransmitted_frames,
        "cpu_s": round(cpu, 3),
    }


def _images(key: Any, size: int) -> tuple[dict[str, UpgradeImage], str]:
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
    return images, source


async def _run(size: int, jobs: int, slow_size: int) -> tuple[list[dict[str, Any]], str]:
    key = generate_key()
    images, source = _images(key, size)
    slow_images, _ = _images(key, slow_size)
    identity = HubIdentity(manufacturer="1072", model="0102", hardware_version="0110", firmware_version="04000007")
    window = SessionSettings().window
    cases = [Case(b, lat, img, w) for b in BAUDS for lat in LATENCIES_MS for img in IMAGES for w in (window, 1)]
    slow = [
        Case(SLOW_BAUD, lat, img, w, transport)
        for transport in ("sim", "tcp")
        for lat in LATENCIES_MS
        for img in IMAGES
        for w in (window, 1)
    ]
    slow += [Case(SLOW_BAUD, 16, "random", w, "tcp", resume=True) for w in (window, 1)]
    gate = asyncio.Semaphore(jobs)

    async def one(case: Case) -> dict[str, Any]:
        async with gate:
            chosen = slow_images if case.baud == SLOW_BAUD else images
            return await run_case(case, chosen[case.image], identity, key)

    cases += slow

    results = await asyncio.gather(*(one(c) for c in cases))
    return list(results), source


def _table(results: list[dict[str, Any]]) -> str:
    head = (
        "| baud | latency ms | image | window | transport | resumed from | bytes sent | efficiency | bytes/s | "
        "limit B/s | compression | frames | retransmitted | CPU s |"
    )
    rows = [head, "|" + "---|" * 14]
    for r in results:
        rows.append(
            f"| {r['baud']} | {r['latency_ms']} | {r['image']} | {r['window']} | {r['transport']} | "
            f"{r['resumed_from']} | {r['image_bytes']} | {r['efficiency']:.3f} | {r['bytes_per_s']} | "
            f"{r['limit_bytes_per_s']} | {r['compression']} | {r['frames']} | {r['retransmitted_frames']} | "
            f"{r['cpu_s']:.2f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="256 KiB images instead of 1 MiB")
    parser.add_argument("--json", action="store_true", help="print the cases as a JSON list")
    parser.add_argument("--jobs", type=int, default=1, help="cases run at once (default 1)")
    parser.add_argument("--slow-kib", type=int, default=16, help="image size at 19200 baud (default 16 KiB)")
    args = parser.parse_args(argv)
    size = (256 if args.quick else 1024) * 1024
    results, source = asyncio.run(_run(size, max(1, args.jobs), args.slow_kib * 1024))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, {platform.machine()}, Python "
        f"{platform.python_version()}, images of {size // 1024} KiB ({args.slow_kib} KiB at {SLOW_BAUD} baud; "
        f"firmware-like: {source}), jobs {args.jobs}"
    )
    print(_table(results))


if __name__ == "__main__":
    main()
