"""Deframer throughput: MB/s of input turned into frames (or discarded) for three kinds of input.

- random: uniformly random bytes (about one false start per 64 KiB)
- frames: back-to-back valid DATA frames of 1 KiB payload
- sof-flood: `A5 5A` repeated, a false start every 2 bytes (the hostile-hub flood)
- header-flood: valid headers declaring the largest payload the deframer accepts, each followed by too few bytes,
  so every candidate costs a header CRC check and, once its bytes are there, a payload CRC check

Each input is fed in 4 KiB reads, as a receive loop gets it. Also prints the deframer's own work
counters (false starts examined, header and frame CRC checks, bytes covered by frame CRCs) per input byte, the
figures the linear-cost tests bound.

    python -m bench.deframe_throughput [--json] [--size KIB] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from typing import Any

from drivers.deframer import Deframer
from drivers.frame import SOF, Frame, MessageType

__all__ = ["inputs", "main", "measure"]

READ = 4096


def _header_flood(size: int) -> bytes:
    # A frame header declaring a 4096-byte payload, cut after the header: every one passes the header CRC.
    head = Frame(MessageType.DATA, 1, 0, bytes(4096)).encode()[:14]
    return (head * (size // len(head) + 1))[:size]


def inputs(size: int) -> dict[str, bytes]:
    """The benchmark inputs, `size` bytes each."""
    rng = random.Random(9)
    frame = Frame.of(MessageType.DATA, 7, 0, offset=0, raw_length=1024, encoding=0, data=rng.randbytes(1024)).encode()
    return {
        "random": rng.randbytes(size),
        "frames": (frame * (size // len(frame) + 1))[:size],
        "sof-flood": (SOF * (size // 2 + 1))[:size],
        "header-flood": _header_flood(size),
    }


def _work(deframer: Deframer) -> dict[str, int]:
    # Counters exist from protocol 3 on; the bench also runs against older code for the "before" figures.
    return {
        name: int(getattr(deframer, name, -1))
        for name in ("candidates", "header_checks", "payload_checks", "crc_bytes")
    }


def measure(size: int, repeat: int) -> list[dict[str, Any]]:
    """One row per input: best MB/s over `repeat` runs, frames delivered, and work counters per input byte."""
    rows = []
    for name, data in inputs(size).items():
        best, frames, work = float("inf"), 0, {}
        for _ in range(repeat):
            deframer = Deframer()
            started = time.perf_counter()
            frames = 0
            for at in range(0, len(data), READ):
                frames += len(deframer.feed(data[at : at + READ]))
            best = min(best, time.perf_counter() - started)
            work = _work(deframer)
        rows.append(
            {
                "input": name,
                "bytes": len(data),
                "seconds": round(best, 4),
                "mb_per_s": round(len(data) / best / 1e6, 2),
                "frames": frames,
                **{f"{k}_per_byte": (round(v / len(data), 3) if v >= 0 else None) for k, v in work.items()},
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--size", type=int, default=1024, help="KiB of each input (default 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per input, best kept (default 3)")
    args = parser.parse_args(argv)
    rows = measure(args.size * 1024, args.repeat)
    if args.json:
        meta = {"python": platform.python_version(), "cpus": os.cpu_count()}
        print(json.dumps({"machine": meta, "rows": rows}, indent=2))
        return
    counters = ("candidates", "header_checks", "payload_checks", "crc_bytes")
    print(
        f"{'input':<13} {'KiB':>6} {'s':>8} {'MB/s':>8} {'frames':>7}"
        f" {'cand/B':>7} {'hdr/B':>6} {'crc/B':>6} {'crcB/B':>8}"
    )
    for r in rows:
        shown = ["-" if r[f"{c}_per_byte"] is None else f"{r[f'{c}_per_byte']:.3f}" for c in counters]
        print(
            f"{r['input']:<13} {r['bytes'] // 1024:>6} {r['seconds']:>8.3f} {r['mb_per_s']:>8.2f} {r['frames']:>7}"
            f" {shown[0]:>7} {shown[1]:>6} {shown[2]:>6} {shown[3]:>8}"
        )


if __name__ == "__main__":
    main()
