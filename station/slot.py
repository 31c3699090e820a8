"""What the operator sees of one slot: who is on it, what is happening, how fast, and how the last hub ended."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["SlotFault", "SlotView"]


class SlotFault(StrEnum):
    """Why a slot could not process the hub on it (the slot shows it, `slot_error` events carry it). Not a job
    outcome: a job it interrupts stays unfinished and resumes when its hub is next seen (docs/station.md)."""

    JIG_UNREACHABLE = "JIG_UNREACHABLE"  # the jig (port, USB device, TCP endpoint) cannot be opened
    PROTOCOL_ERROR = "PROTOCOL_ERROR"  # the hub answered identify with something the protocol does not allow
    NO_DEVICE_ID = "NO_DEVICE_ID"  # the hub reported no CHF or GPF ID (all zeros): it cannot be matched or recorded
    LINK_FAILED = "LINK_FAILED"  # the link failed outside the transfer's own retries
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"  # the store could not be written (disk full, read-only, I/O error)
    INTERNAL_ERROR = "INTERNAL_ERROR"  # a fault in the station's own code (logged with its traceback)


@dataclass
class SlotView:
    name: str
    state: str = "empty"  # empty, identifying, deciding, transferring, verifying, activating, done, held, error
    chf_id: str | None = None
    gpf_id: str | None = None
    order_ref: str | None = None
    firmware: str | None = None
    target: str | None = None
    bytes_done: int = 0
    bytes_total: int = 0
    bytes_per_s: float = 0.0
    message: str = ""
    last_chf_id: str | None = None
    last_outcome: str | None = None
    last_reason: str | None = None
    fault: str | None = None  # a SlotFault while state is "error"
    hubs_done: int = 0
    _started: float | None = field(default=None, repr=False)
    _sample: tuple[float, int] | None = field(default=None, repr=False)

    def begin(self, state: str, **facts: Any) -> None:
        self.state = state
        self.fault = None
        for key, value in facts.items():
            setattr(self, key, value)

    def progress(self, done: int, total: int) -> None:
        """The transfer engine's callback: bytes of the image the hub has acknowledged, of `total`."""
        now = time.monotonic()
        if self._sample is None or done < self._sample[1]:
            self._sample = (now, done)
            self._started = now
        else:
            seconds = now - self._sample[0]
            if seconds >= 0.5:
                rate = (done - self._sample[1]) / seconds
                # Smoothed so the operator's bytes/s does not flicker with each window of acks.
                self.bytes_per_s = rate if self.bytes_per_s == 0 else 0.7 * self.bytes_per_s + 0.3 * rate
                self._sample = (now, done)
        self.bytes_done, self.bytes_total = done, total

    @property
    def eta_s(self) -> float | None:
        if self.bytes_per_s <= 0 or self.bytes_total <= self.bytes_done:
            return None
        return (self.bytes_total - self.bytes_done) / self.bytes_per_s

    def finish(self, chf_id: str, outcome: str, reason: str) -> None:
        self.last_chf_id, self.last_outcome, self.last_reason = chf_id, outcome, reason
        self.hubs_done += 1
        self.state = "done"
        self.bytes_per_s = 0.0
        self._sample = None

    def fail(self, fault: SlotFault, message: str) -> None:
        """The slot could not go on with its hub: state `error`, with the fault's code and a message."""
        self.state, self.fault, self.message = "error", fault.value, message
        self.bytes_per_s = 0.0

    def clear(self) -> None:
        self.state, self.chf_id, self.gpf_id, self.order_ref = "empty", None, None, None
        self.fault = None
        self.firmware, self.target, self.message = None, None, ""
        self.bytes_done = self.bytes_total = 0
        self.bytes_per_s = 0.0

    def describe(self) -> dict[str, Any]:
        view = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        view["eta_s"] = self.eta_s
        return view
