"""A job's final outcome: what happened to one hub on one visit to the bench."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["FINAL_OUTCOMES", "JOB_REASONS", "JobReason", "Outcome"]


class Outcome(StrEnum):
    REFLASHED = "REFLASHED"  # version read back equals the target and the hub's hash equals the catalog's
    ALREADY_CURRENT = "ALREADY_CURRENT"
    REFUSED = "REFUSED"  # the policy refused; the reason code says which rule
    FAILED = "FAILED"  # retries exhausted; the hub was left recoverable
    QUARANTINED = "QUARANTINED"  # activation failed or the hub no longer answers sensibly
    SCRAP = "SCRAP"  # the target is past its installation validity
    UNEXPECTED = "UNEXPECTED"  # no open order names the hub; held, not flashed


FINAL_OUTCOMES = frozenset(Outcome)


class JobReason(StrEnum):
    """Reason codes a job gives besides the policy's (docs/policy.md): what the hub or the link did."""

    REFLASHED = "REFLASHED"
    NOT_IN_OPEN_ORDER = "NOT_IN_OPEN_ORDER"
    TRANSFER_REFUSED_BY_HUB = "TRANSFER_REFUSED_BY_HUB"
    LINK_RETRIES_EXHAUSTED = "LINK_RETRIES_EXHAUSTED"
    HUB_HASH_MISMATCH = "HUB_HASH_MISMATCH"
    HUB_SIGNATURE_REJECTED = "HUB_SIGNATURE_REJECTED"
    ACTIVATION_NO_IMAGE_HELD = "ACTIVATION_NO_IMAGE_HELD"
    ACTIVATION_HASH_MISMATCH = "ACTIVATION_HASH_MISMATCH"
    ACTIVATION_FAILURE = "ACTIVATION_FAILURE"
    HUB_UNRESPONSIVE_AFTER_ACTIVATE = "HUB_UNRESPONSIVE_AFTER_ACTIVATE"
    VERSION_NOT_TARGET_AFTER_ACTIVATE = "VERSION_NOT_TARGET_AFTER_ACTIVATE"
    PROTOCOL_ERROR = "PROTOCOL_ERROR"


# code -> (outcome, meaning); docs/station.md lists them and a test keeps the two equal.
JOB_REASONS: dict[JobReason, tuple[Outcome, str]] = {
    JobReason.REFLASHED: (Outcome.REFLASHED, "the version read back is the target and the hub's hash is the catalog's"),
    JobReason.NOT_IN_OPEN_ORDER: (Outcome.UNEXPECTED, "no open order names the hub; held for the operator"),
    JobReason.TRANSFER_REFUSED_BY_HUB: (Outcome.FAILED, "the hub refused begin-transfer; nothing was changed"),
    JobReason.LINK_RETRIES_EXHAUSTED: (
        Outcome.FAILED,
        "the link failed on every attempt; what the hub holds is kept for the next visit (resume)",
    ),
    JobReason.HUB_HASH_MISMATCH: (Outcome.FAILED, "the hub holds other bytes than were sent; not activated"),
    JobReason.HUB_SIGNATURE_REJECTED: (Outcome.FAILED, "the hub's own signature check failed; not activated"),
    JobReason.ACTIVATION_NO_IMAGE_HELD: (Outcome.QUARANTINED, "CS06 1 No Image Held"),
    JobReason.ACTIVATION_HASH_MISMATCH: (Outcome.QUARANTINED, "CS06 2 Hash Mismatch"),
    JobReason.ACTIVATION_FAILURE: (Outcome.QUARANTINED, "CS06 3 Activation Failure"),
    JobReason.HUB_UNRESPONSIVE_AFTER_ACTIVATE: (
        Outcome.QUARANTINED,
        "the hub did not answer after activation",
    ),
    JobReason.VERSION_NOT_TARGET_AFTER_ACTIVATE: (
        Outcome.QUARANTINED,
        "activation answered, but the version read back is not the target",
    ),
    JobReason.PROTOCOL_ERROR: (Outcome.QUARANTINED, "the hub broke the maintenance-port protocol"),
}
