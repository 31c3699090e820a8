"""CPU per message of the contract's schema check: the reference validator (python-jsonschema, what the bridge and
the station used alone before) against the checker (fastjsonschema first, the reference only for a refusal).

    python -m bench.schema_check_cost [--json] [--repeat N]

Each case checks one message N times and reports CPU microseconds per check (process time, best of 3 rounds), for a
valid HubResult (what the bridge checks), a valid DspAck (what the station checks) and a HubResult with a bad
`message_id` (the refusal path: both validators run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from station.schema_check import PayloadChecker

RESULT: dict[str, Any] = {
    "schema": "reflash.hub-result/1.1", "message_id": "302850c9-08ee-40e7-8b5b-27d05c66f480", "sequence": 7,
    "station": "st-north-01", "region": "North", "order_ref": None, "requesting_party": None,
    "chf_id": "00-DB-12-34-56-78-90-A0", "gpf_id": "00-DB-12-34-56-78-90-A1", "manufacturer": "121D",
    "model": "0000", "hardware_version": "1200", "firmware_before": "01000000", "firmware_after": "01020000",
    "image_sha256": "ab" * 32, "outcome": "REFLASHED", "reason": "REFLASHED", "attempts": 1,
    "started_at": "2026-12-06T10:00:00.000Z", "finished_at": "2026-12-06T10:00:01.000Z", "operator": "op-1",
    "facility": "SSC-1", "audit_hash": "cd" * 32,
}  # fmt: skip
ACK: dict[str, Any] = {
    "schema": "reflash.dsp-ack/1.1", "message_id": "302850c9-08ee-40e7-8b5b-27d05c66f480", "result": "applied",
    "reason": None, "bridge": "dsp-bridge-1", "at": "2026-12-06T10:00:00.000Z",
}  # fmt: skip


def per_check_us(check: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(repeat):
            check()
        best = min(best, time.process_time() - start)
    return best / repeat * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cases = []
    for name, channel, message in (
        ("valid HubResult", "result", RESULT),
        ("valid DspAck", "ack", ACK),
        ("HubResult, bad message_id", "result", RESULT | {"message_id": "nope"}),
    ):
        checker = PayloadChecker(channel)
        schema = checker.versions[message["schema"]]
        reference = per_check_us(partial(schema.reference_problem, message), args.repeat)
        now = per_check_us(partial(checker.problem, message), args.repeat)
        cases.append({"case": name, "reference_us": round(reference, 1), "checker_us": round(now, 1)})
    if args.json:
        print(json.dumps(cases, indent=2))
        return
    print(f"{'case':<28} {'reference us':>12} {'checker us':>10}")
    for c in cases:
        print(f"{c['case']:<28} {c['reference_us']:>12.1f} {c['checker_us']:>10.1f}")


if __name__ == "__main__":
    main()
