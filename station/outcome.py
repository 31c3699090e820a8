"""A job's final outcome: what happened to one hub on one visit to the bench."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["FINAL_OUTCOMES", "INTERRUPTIONS", "JOB_REASONS", "Interruption", "JobReason", "Outcome"]


class Outcome(StrEnum):
    REFLASHED = "REFLASHED"  # the hub proved it runs the catalog's envelope and reads back the target version
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
    HUB_REJECTS_DATA = "HUB_REJECTS_DATA"
    TRANSFER_DEADLINE_EXCEEDED = "TRANSFER_DEADLINE_EXCEEDED"
    VERIFY_DEADLINE_EXCEEDED = "VERIFY_DEADLINE_EXCEEDED"
    HUB_HASH_MISMATCH = "HUB_HASH_MISMATCH"
    HUB_SIGNATURE_REJECTED = "HUB_SIGNATURE_REJECTED"
    HUB_PROOF_FAILED = "HUB_PROOF_FAILED"
    ACTIVATION_NO_IMAGE_HELD = "ACTIVATION_NO_IMAGE_HELD"
    ACTIVATION_HASH_MISMATCH = "ACTIVATION_HASH_MISMATCH"
    ACTIVATION_FAILURE = "ACTIVATION_FAILURE"
    HUB_UNRESPONSIVE_AFTER_ACTIVATE = "HUB_UNRESPONSIVE_AFTER_ACTIVATE"
    VERSION_NOT_TARGET_AFTER_ACTIVATE = "VERSION_NOT_TARGET_AFTER_ACTIVATE"
    RUNNING_IMAGE_UNPROVEN = "RUNNING_IMAGE_UNPROVEN"
    ACTIVATE_DEADLINE_EXCEEDED = "ACTIVATE_DEADLINE_EXCEEDED"
    PROTOCOL_ERROR = "PROTOCOL_ERROR"


# code -> (outcome, meaning); docs/station.md lists them and a test keeps the two equal.
JOB_REASONS: dict[JobReason, tuple[Outcome, str]] = {
    JobReason.REFLASHED: (
        Outcome.REFLASHED,
        "the hub proved it runs the catalog's whole image and the version read back is the target",
    ),
    JobReason.NOT_IN_OPEN_ORDER: (Outcome.UNEXPECTED, "no open order names the hub; held for the operator"),
    JobReason.TRANSFER_REFUSED_BY_HUB: (Outcome.FAILED, "the hub refused begin-transfer; nothing was changed"),
    JobReason.LINK_RETRIES_EXHAUSTED: (
        Outcome.FAILED,
        "the link failed on every attempt; what the hub holds is kept for the next visit (resume)",
    ),
    JobReason.HUB_REJECTS_DATA: (
        Outcome.FAILED,
        "the hub answered the data with NAKs (bad data) go-back after go-back without taking a byte: its flash "
        "write fails; what it holds is kept",
    ),
    JobReason.TRANSFER_DEADLINE_EXCEEDED: (
        Outcome.FAILED,
        "the transfer did not finish within its deadline (a hub that takes data too slowly); what the hub holds is "
        "kept for the next visit (resume)",
    ),
    JobReason.VERIFY_DEADLINE_EXCEEDED: (
        Outcome.FAILED,
        "verifying and proving the staged image did not finish within its deadline; not activated",
    ),
    JobReason.HUB_HASH_MISMATCH: (Outcome.FAILED, "the hub holds other bytes than were sent; not activated"),
    JobReason.HUB_SIGNATURE_REJECTED: (Outcome.FAILED, "the hub's own signature check failed; not activated"),
    JobReason.HUB_PROOF_FAILED: (
        Outcome.QUARANTINED,
        "the hub could not prove it holds the image, even after an erase and a fresh transfer; not activated",
    ),
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
    JobReason.RUNNING_IMAGE_UNPROVEN: (
        Outcome.QUARANTINED,
        "the hub reports the target version but could not prove it runs the catalog's image",
    ),
    JobReason.ACTIVATE_DEADLINE_EXCEEDED: (
        Outcome.QUARANTINED,
        "activation and read-back did not finish within their deadline: what the hub runs is not known",
    ),
    JobReason.PROTOCOL_ERROR: (Outcome.QUARANTINED, "the hub broke the maintenance-port protocol"),
}


class Interruption(StrEnum):
    """Why a job stopped WITHOUT an outcome: it stays open (interrupted) and resumes when its hub is seen again,
    and nothing is reported to the DSP for it until then."""

    STATION_STOPPING = "STATION_STOPPING"
    NO_CATALOG = "NO_CATALOG"
    LINK_FAILED = "LINK_FAILED"
    HUB_SWAPPED = "HUB_SWAPPED"


# code -> meaning; docs/station.md lists them and a test keeps the two equal.
INTERRUPTIONS: dict[Interruption, str] = {
    Interruption.STATION_STOPPING: "the station was stopped (SIGTERM, SIGINT) or killed while the job ran",
    Interruption.NO_CATALOG: "no catalog is in force, or the one in force is expired or refused",
    Interruption.LINK_FAILED: "the link or the jig failed outside the transfer's own retries",
    Interruption.HUB_SWAPPED: (
        "another hub answered on the jig (CHF ID, GPF ID, manufacturer, model, hardware or serial differ); "
        "that hub gets a job of its own"
    ),
}
