"""Server-side sessions of operators signed in at the bench page.

The cookie holds only a random id (32 bytes); the session (who, their role, the CSRF token) stays in the station's
memory, so a restart signs everyone out. A session ends 8 hours after sign-in, or after 30 minutes without a request.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from station.store import Role

__all__ = ["IDLE_S", "LIFETIME_S", "Session", "SessionBook"]

LIFETIME_S = 8 * 3600
IDLE_S = 30 * 60


@dataclass
class Session:
    id: str
    operator: str
    role: Role
    csrf: str
    started: float
    seen: float = field(default=0.0)


class SessionBook:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    def open(self, operator: str, role: Role) -> Session:
        now = self._clock()
        session = Session(secrets.token_urlsafe(32), operator, role, secrets.token_urlsafe(32), now, now)
        self._sessions[session.id] = session
        return session

    def find(self, session_id: str | None, *, touch: bool = True) -> Session | None:
        """The live session with this id, touched (a request: the idle limit starts again; not an event pushed to
        it); None when there is none or it has expired (then it is gone)."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if now - session.started > LIFETIME_S or now - session.seen > IDLE_S:
            del self._sessions[session_id]
            return None
        if touch:
            session.seen = now
        return session

    def close(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
