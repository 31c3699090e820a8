"""Crash points: stop this process at a named point of a job, as a power cut (SIGKILL) or an operator (SIGTERM) would.

Crash tests need the station to stop at one exact step (inside the outcome transaction, just after the hub
activated), which timing from outside cannot hit reliably. The store and the job name their steps; when the
environment variable `REFLASH_CRASH_AT` names one, the process signals itself there. Unset (production), every
call is one dictionary lookup that finds nothing.

    REFLASH_CRASH_AT = POINT "=" SIGNAL          e.g.  after:activate=KILL   during:job_finished=TERM

POINT is `after:KIND` (the transaction that appended audit entry KIND has committed), `during:KIND` (that entry is
written but its transaction has not committed), or one of the job's own points (`transfer_half`, `activating`) and
the reporter's (`after:published`). SIGNAL is KILL or TERM. The first time the point is reached counts.
"""

from __future__ import annotations

import os
import signal
import sys

__all__ = ["ENV", "reached"]

ENV = "REFLASH_CRASH_AT"
_SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM}


def _parse(spec: str) -> tuple[str, signal.Signals] | None:
    if not spec:
        return None
    point, _, name = spec.rpartition("=")
    if not point or name not in _SIGNALS:
        raise ValueError(f"{ENV}={spec!r}: expected POINT=KILL or POINT=TERM")
    return point, _SIGNALS[name]


_armed = _parse(os.environ.get(ENV, ""))


def reached(point: str) -> None:
    """Signal this process if `point` is the armed crash point (once)."""
    global _armed
    if _armed is not None and _armed[0] == point:
        sig = _armed[1]
        _armed = None
        # Said on stderr first, so that a test knows the point was reached and not merely never hit.
        print(f"crash point {point}: {sig.name}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), sig)
