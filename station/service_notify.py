"""The station's word to systemd (sd_notify(3)): READY=1 once the start is recorded, WATCHDOG=1 while the event loop
runs, STATUS= with a one-line summary, STOPPING=1 when it drains. docs/operations.md shows the unit that listens.

The protocol is one datagram of `KEY=value` lines to the unix socket named by $NOTIFY_SOCKET (a path, or `@name` in
the abstract namespace), so it is written here rather than taken from a library: `sdnotify` on PyPI has not changed
since 2017, and `systemd-python` is a C extension that needs libsystemd's headers to build. Without $NOTIFY_SOCKET
(not started by systemd, or Type=simple) every call does nothing. A notification that cannot be sent is logged once
and never stops the station.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from station.live_state import StationSnapshot

__all__ = ["ServiceNotifier", "status_text"]

log = logging.getLogger(__name__)


class ServiceNotifier:
    """sd_notify for one process. `watchdog_interval_s` is half of $WATCHDOG_USEC (None when systemd watches no
    watchdog for this process), the interval systemd's documentation recommends."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET") or None
        self._address: str | bytes | None = None
        if address is not None:
            # `@name` is the abstract namespace: a leading NUL byte on the wire.
            self._address = b"\0" + address[1:].encode() if address.startswith("@") else address
        self.watchdog_interval_s: float | None = None
        usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
        if self._address is not None and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval_s = int(usec) / 2_000_000
        self._failed = False
        self._status: str | None = None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, **fields: str) -> None:
        """Send `KEY=value` lines in one datagram (keys as sd_notify spells them: READY, STATUS, ...)."""
        if self._address is None:
            return
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self._address)
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify the service manager at $NOTIFY_SOCKET: %s", exc)
                self._failed = True
        else:
            self._failed = False

    def ready(self, status: str) -> None:
        self._status = _one_line(status)
        self.notify(READY="1", STATUS=self._status)

    def status(self, status: str) -> None:
        """STATUS=, sent only when it changed."""
        line = _one_line(status)
        if line != self._status:
            self._status = line
            self.notify(STATUS=line)

    def watchdog(self) -> None:
        self.notify(WATCHDOG="1")

    def stopping(self, status: str = "stopping: draining the bench") -> None:
        self._status = _one_line(status)
        self.notify(STOPPING="1", STATUS=self._status)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


def status_text(snapshot: StationSnapshot) -> str:
    """The STATUS= line `systemctl status` shows: slots by state, hubs by outcome, the outbox's wait."""
    states: dict[str, int] = {}
    for slot in snapshot.slots:
        states[slot.state.value] = states.get(slot.state.value, 0) + 1
    totals = snapshot.totals
    line = (
        f"slots: {', '.join(f'{n} {s}' for s, n in sorted(states.items())) or 'none'}; "
        f"hubs: {totals.hubs} ({', '.join(f'{o} {n}' for o, n in totals.outcomes.items()) or 'no outcomes'}); "
        f"{totals.hubs_per_hour} hubs/h"
    )
    outbox = (snapshot.reporting or {}).get("outbox")
    if outbox is not None:
        line += f"; outbox {outbox['pending']} pending, {outbox['at_broker']} at broker"
    return line
