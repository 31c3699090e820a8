"""A job's final outcome: what happened to one hub on one visit to the bench."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["FINAL_OUTCOMES", "Outcome"]


class Outcome(StrEnum):
    REFLASHED = "REFLASHED"  # version read back equals the target and the hub's hash equals the catalog's
    ALREADY_CURRENT = "ALREADY_CURRENT"
    REFUSED = "REFUSED"  # the policy refused; the reason code says which rule
    FAILED = "FAILED"  # retries exhausted; the hub was left recoverable
    QUARANTINED = "QUARANTINED"  # activation failed or the hub no longer answers sensibly
    SCRAP = "SCRAP"  # the target is past its installation validity
    UNEXPECTED = "UNEXPECTED"  # no open order names the hub; held, not flashed


FINAL_OUTCOMES = frozenset(Outcome)
