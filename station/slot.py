"""One slot of the bench as the operator sees it: its state, the hub on it, how fast it goes, how its last hub ended.

The bench owns each slot's `SlotView` and changes it only through its methods (the job reports through them too);
every change tells the bench, which publishes a frozen `SlotSnapshot` of every slot to whoever watches (the status
file, the live table, MQTT telemetry, the bench page: station/live_state.py). Nothing reads or sets a slot's
fields by name.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from station.outcome import Outcome

__all__ = ["SlotCounters", "SlotFault", "SlotSnapshot", "SlotState", "SlotView"]


class SlotState(StrEnum):
    """What a slot is doing. `held` and `error` need the operator (or time): `run --once` ends them unfinished."""

    EMPTY = "empty"  # no hub answers on the jig
    IDENTIFYING = "identifying"  # asking the jig who is on it
    DECIDING = "deciding"  # a hub was identified: matching its order, asking the policy
    TRANSFERRING = "transferring"  # sending the image
    VERIFYING = "verifying"  # the hub hashes and proves what it holds
    ACTIVATING = "activating"  # the hub boots the new image; the station reads its version back
    DONE = "done"  # the hub on the slot has its outcome (or had one already)
    HELD = "held"  # the hub waits, without an outcome (not scanned in, interrupted, swapped, no catalog)
    ERROR = "error"  # the slot could not process the hub on it: a SlotFault says why

    @property
    def unfinished(self) -> bool:
        return self in (SlotState.HELD, SlotState.ERROR)


class SlotFault(StrEnum):
    """Why a slot could not process the hub on it (the slot shows it, `slot_error` events carry it). Not a job
    outcome: a job it interrupts stays unfinished and resumes when its hub is next seen (docs/station.md)."""

    JIG_UNREACHABLE = "JIG_UNREACHABLE"  # the jig (port, USB device, TCP endpoint) cannot be opened
    PROTOCOL_ERROR = "PROTOCOL_ERROR"  # the hub answered identify with something the protocol does not allow
    NO_DEVICE_ID = "NO_DEVICE_ID"  # the hub reported no CHF or GPF ID (all zeros): it cannot be matched or recorded
    LINK_FAILED = "LINK_FAILED"  # the link failed outside the transfer's own retries
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"  # the store could not be written (disk full, read-only, I/O error)
    INTERNAL_ERROR = "INTERNAL_ERROR"  # a fault in the station's own code (logged with its traceback)


class SlotSnapshot(BaseModel):
    """One slot at one moment, as every view of the bench shows it (status.json's `slots`, the live table, the
    telemetry, the bench page). Frozen: a subscriber can keep it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    state: SlotState
    chf_id: str | None = None
    gpf_id: str | None = None
    order_ref: str | None = None
    firmware: str | None = None  # what the hub ran when it was identified
    target: str | None = None  # the version being flashed
    bytes_done: int = 0
    bytes_total: int = 0
    bytes_per_s: float = 0.0
    eta_s: float | None = None
    message: str = ""
    last_chf_id: str | None = None
    last_outcome: Outcome | None = None
    last_reason: str | None = None
    fault: SlotFault | None = None  # set while state is `error`
    hubs_done: int = 0


@dataclass(frozen=True)
class SlotCounters:
    """What a slot has done since the station started, for the metrics (station/metrics.py): only ever grows."""

    bytes_acked: int = 0  # image bytes the hubs on this slot acknowledged (a resumed prefix is not counted again)
    link_errors: int = 0  # transfer attempts that ended with a link error


class SlotView:
    """The bench's working record of one slot. Every method is one change the operator may see; `on_change` is
    called after each (the bench publishes from it)."""

    def __init__(self, name: str, on_change: Callable[[], None] | None = None) -> None:
        self.name = name
        self._on_change = on_change or (lambda: None)
        self.state = SlotState.EMPTY
        self.chf_id: str | None = None
        self.gpf_id: str | None = None
        self.order_ref: str | None = None
        self.firmware: str | None = None
        self.target: str | None = None
        self.bytes_done = 0
        self.bytes_total = 0
        self.bytes_per_s = 0.0
        self.message = ""
        self.last_chf_id: str | None = None
        self.last_outcome: Outcome | None = None
        self.last_reason: str | None = None
        self.fault: SlotFault | None = None
        self.hubs_done = 0
        self._sample: tuple[float, int] | None = None
        self._acked_at: int | None = None  # the last acknowledged offset of this transfer, for `counters`
        self._bytes_acked = 0
        self._link_errors = 0

    def enter(self, state: SlotState, message: str = "", *, target: str | None = None) -> None:
        """The slot moves to `state`, saying `message`; `target` when the version being flashed becomes known."""
        self.state, self.message, self.fault = state, message, None
        if target is not None:
            self.target = target
        self._on_change()

    def look(self) -> None:
        """The slot asks its jig who is on it: shown as identifying unless it shows a hub or a fault already."""
        if self.state in (SlotState.EMPTY, SlotState.IDENTIFYING):
            self.enter(SlotState.IDENTIFYING)

    def hub(self, chf_id: str, gpf_id: str | None, order_ref: str | None, firmware: str | None) -> None:
        """A hub was identified on the slot and its job begins: the policy decides."""
        self.chf_id, self.gpf_id, self.order_ref, self.firmware = chf_id, gpf_id, order_ref, firmware
        self.target = None
        self.bytes_done = self.bytes_total = 0
        self.enter(SlotState.DECIDING)

    def hold(self, chf_id: str, gpf_id: str | None, order_ref: str | None, message: str) -> None:
        """A hub waits on the slot without a job (not scanned in to its order)."""
        self.clear(notify=False)
        self.chf_id, self.gpf_id, self.order_ref = chf_id, gpf_id, order_ref
        self.enter(SlotState.HELD, message)

    def transferring(self, target: str, total: int) -> None:
        self.bytes_done, self.bytes_total = 0, total
        self._sample = self._acked_at = None
        self.enter(SlotState.TRANSFERRING, target=target)

    def progress(self, done: int, total: int) -> None:
        """The transfer engine's callback: bytes of the image the hub has acknowledged, of `total`."""
        # Each attempt first reports where it starts (0, or the prefix the hub proved it holds): counted from there.
        if self._acked_at is not None and done >= self._acked_at:
            self._bytes_acked += done - self._acked_at
        self._acked_at = done
        now = time.monotonic()
        if self._sample is None or done < self._sample[1]:
            self._sample = (now, done)
        else:
            seconds = now - self._sample[0]
            if seconds >= 0.5:
                rate = (done - self._sample[1]) / seconds
                # Smoothed so the operator's bytes/s does not flicker with each window of acks.
                self.bytes_per_s = rate if self.bytes_per_s == 0 else 0.7 * self.bytes_per_s + 0.3 * rate
                self._sample = (now, done)
        self.bytes_done, self.bytes_total = done, total
        self._on_change()

    @property
    def eta_s(self) -> float | None:
        if self.bytes_per_s <= 0 or self.bytes_total <= self.bytes_done:
            return None
        return (self.bytes_total - self.bytes_done) / self.bytes_per_s

    def link_error(self) -> None:
        """A transfer attempt on this slot ended with a link error (the job retries it; the view does not change)."""
        self._link_errors += 1

    def counters(self) -> SlotCounters:
        return SlotCounters(self._bytes_acked, self._link_errors)

    def finish(self, chf_id: str, outcome: Outcome, reason: str) -> None:
        self.last_chf_id, self.last_outcome, self.last_reason = chf_id, outcome, reason
        self.hubs_done += 1
        self.bytes_per_s = 0.0
        self._sample = None
        self.enter(SlotState.DONE)

    def fail(self, fault: SlotFault, message: str) -> None:
        """The slot could not go on with its hub: state `error`, with the fault's code and a message."""
        self.state, self.fault, self.message = SlotState.ERROR, fault, message
        self.bytes_per_s = 0.0
        self._on_change()

    def clear(self, *, notify: bool = True) -> None:
        """No hub on the slot (the last hub's outcome stays shown)."""
        self.state, self.chf_id, self.gpf_id, self.order_ref = SlotState.EMPTY, None, None, None
        self.fault = None
        self.firmware, self.target, self.message = None, None, ""
        self.bytes_done = self.bytes_total = 0
        self.bytes_per_s = 0.0
        if notify:
            self._on_change()

    def snapshot(self) -> SlotSnapshot:
        return SlotSnapshot(
            name=self.name, state=self.state, chf_id=self.chf_id, gpf_id=self.gpf_id, order_ref=self.order_ref,
            firmware=self.firmware, target=self.target, bytes_done=self.bytes_done, bytes_total=self.bytes_total,
            bytes_per_s=round(self.bytes_per_s, 1), eta_s=None if self.eta_s is None else round(self.eta_s, 1),
            message=self.message, last_chf_id=self.last_chf_id, last_outcome=self.last_outcome,
            last_reason=self.last_reason, fault=self.fault, hubs_done=self.hubs_done,
        )  # fmt: skip
