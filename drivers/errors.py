"""The maintenance-port exception tree: what went wrong, and whether trying again can help.

    MaintenancePortError            anything the maintenance port raises
     +-- LinkError                  the byte stream failed; the hub may be fine. Retryable: a new session resumes.
     |    +-- LinkClosed            the far end closed the stream (pulled cable, power cut, dropped TCP)
     |    +-- LinkTimeout           no answer after every retransmission (silent or hung hub, dead link)
     +-- HubRefused                 the hub answered, and the answer is no. Not retryable as is.
     |    +-- TransferRefused       begin-transfer refused; `reason` is a `RefuseReason`
     |    +-- ProofFailed           the hub could not prove (PROVE) that it holds the bytes; `region`, `held`
     |    +-- DataRejected          the hub NAKs the data itself (bad data, beyond the end) without taking any
     +-- HubSwapped                 the hub on the jig is not the one the job began with. Not retryable.
     +-- ProtocolError              the hub broke the protocol: unexpected message, bad field, impossible offset
          +-- FrameError            bytes that do not parse as a frame or message (names field and byte offset)
          +-- DeframeError          the deframer was misused (never raised for any byte content it is fed)

A station treats `LinkError` as "try again later, the transfer resumes", `HubRefused` as an outcome to record with its
code, `HubSwapped` as the end of the job for the hub it expected (nothing more is sent to the one found), and
`ProtocolError` as a fault in the hub or the jig firmware.
"""

from __future__ import annotations

from firmware_catalog.hub import HubIdentity

__all__ = [
    "DataRejected",
    "DeframeError",
    "FrameError",
    "HubRefused",
    "HubSwapped",
    "LinkClosed",
    "LinkError",
    "LinkTimeout",
    "MaintenancePortError",
    "ProofFailed",
    "ProtocolError",
    "TransferRefused",
]


class MaintenancePortError(Exception):
    """Base of everything the maintenance-port session raises."""


class LinkError(MaintenancePortError):
    """The link failed; retrying with a new session is expected to work and resumes the transfer."""

    retryable = True


class LinkClosed(LinkError):
    """The far end closed the byte stream."""


class LinkTimeout(LinkError):
    """No valid answer arrived after every retransmission."""


class HubRefused(MaintenancePortError):
    """The hub understood the request and refused it."""

    retryable = False


class TransferRefused(HubRefused):
    """Begin-transfer was refused; `reason` is the hub's `RefuseReason` code and `detail` its text."""

    def __init__(self, reason: int, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"transfer refused (reason {reason}): {detail}")


class ProofFailed(HubRefused):
    """The hub could not prove it holds the bytes asked about. `region` is the `ProofRegion` code (0 staged,
    1 running) and `held` the bytes the hub said it holds there."""

    def __init__(self, region: int, held: int, message: str) -> None:
        self.region = region
        self.held = held
        super().__init__(message)


class DataRejected(HubRefused):
    """The hub answered DATA with NAKs that reject the data itself (bad data, beyond the end), rewind after rewind,
    without taking a byte: its flash write fails, or it will not take this image. `offset` is where it is stuck,
    `reason` the last such `NakReason` and `naks` how many NAKs came without progress. What it holds is kept."""

    def __init__(self, offset: int, reason: int, naks: int, message: str) -> None:
        self.offset = offset
        self.reason = reason
        self.naks = naks
        super().__init__(message)


class HubSwapped(MaintenancePortError):
    """The hub that answered IDENTIFY on a new connection is not the one expected: another hub is on the jig.

    `expected` and `found` are the two identities, `fields` the identity fields that differ. Never retried: the job
    for the expected hub cannot go on, and nothing is sent to the hub found.
    """

    retryable = False
    # What makes a hub the same hub; firmware and staged versions change legitimately during a job.
    IDENTITY_FIELDS = ("chf_id", "gpf_id", "manufacturer", "model", "hardware_version", "serial")

    def __init__(self, expected: HubIdentity, found: HubIdentity, fields: tuple[str, ...] | None = None) -> None:
        self.expected = expected
        self.found = found
        self.fields = self.differences(expected, found) if fields is None else fields
        differ = ", ".join(f"{name} {getattr(expected, name)} -> {getattr(found, name)}" for name in self.fields)
        super().__init__(f"hub swapped: expected CHF ID {expected.chf_id}, found CHF ID {found.chf_id} ({differ})")

    @classmethod
    def differences(cls, expected: HubIdentity, found: HubIdentity) -> tuple[str, ...]:
        """The identity fields that differ; `serial` only counts when both hubs report one."""
        out = []
        for name in cls.IDENTITY_FIELDS:
            a, b = getattr(expected, name), getattr(found, name)
            if name == "serial" and (a is None or b is None):
                continue
            if a != b:
                out.append(name)
        return tuple(out)


class ProtocolError(MaintenancePortError):
    """The far end sent something the protocol does not allow."""

    retryable = False


class FrameError(ProtocolError):
    """Bytes that are not a valid frame or message; says which field and at which byte offset."""

    def __init__(self, what: str, field: str, offset: int, message: str) -> None:
        self.what = what
        self.field = field
        self.offset = offset
        self.detail = message
        super().__init__(f"{what}: {field} at byte {offset}: {message}")


class DeframeError(ProtocolError):
    """The deframer was given something it cannot work with (never raised for the bytes it is fed)."""
