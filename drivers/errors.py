"""The maintenance-port exception tree: what went wrong, and whether trying again can help.

    MaintenancePortError            anything the maintenance port raises
     +-- LinkError                  the byte stream failed; the hub may be fine. Retryable: a new session resumes.
     |    +-- LinkClosed            the far end closed the stream (pulled cable, power cut, dropped TCP)
     |    +-- LinkTimeout           no answer after every retransmission (silent or hung hub, dead link)
     +-- HubRefused                 the hub answered, and the answer is no. Not retryable as is.
     |    +-- TransferRefused       begin-transfer refused; `reason` is a `RefuseReason`
     |    +-- ActivationFailed      CS06 outcome other than Success, or the wrong version running afterwards
     |    +-- VerificationFailed    the hub's hash or signature verdict does not match what was sent
     +-- ProtocolError              the hub broke the protocol: unexpected message, bad field, impossible offset
          +-- FrameError            bytes that do not parse as a frame or message (names field and byte offset)
          +-- DeframeError          the deframer was misused (never raised for any byte content it is fed)

A station treats `LinkError` as "try again later, the transfer resumes", `HubRefused` as an outcome to record with its
code, and `ProtocolError` as a fault in the hub or the jig firmware.
"""

from __future__ import annotations

__all__ = [
    "ActivationFailed",
    "DeframeError",
    "FrameError",
    "HubRefused",
    "LinkClosed",
    "LinkError",
    "LinkTimeout",
    "MaintenancePortError",
    "ProtocolError",
    "TransferRefused",
    "VerificationFailed",
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


class ActivationFailed(HubRefused):
    """Activation did not leave the target running. `code` is the CS06 outcome, `running` the version reported."""

    def __init__(self, code: int, running: int, message: str) -> None:
        self.code = code
        self.running = running
        super().__init__(message)


class VerificationFailed(HubRefused):
    """The hub holds something other than what was sent, or its own signature check failed."""


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
