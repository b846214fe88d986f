"""Console sessions held in memory: random ids with an idle and an absolute expiry, ended by
logout. One broker process holds its own sessions (a restart signs everyone out; several
instances behind a balancer would need a shared store or sticky sessions)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

#: sessions kept at most; the oldest is dropped to make room for a new one
MAX_SESSIONS = 1000


@dataclass
class _Session:
    created: float
    seen: float


class SessionStore:
    def __init__(self, idle_timeout: float, max_age: float,
                 clock: Callable[[], float] = time.monotonic,
                 max_sessions: int = MAX_SESSIONS) -> None:
        self.idle_timeout = idle_timeout
        self.max_age = max_age
        self.clock = clock
        self.max_sessions = max_sessions
        self._sessions: dict[str, _Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self) -> str:
        """A new session id (256 random bits, URL-safe text)."""
        now = self.clock()
        self._expire(now)
        while len(self._sessions) >= self.max_sessions:
            self._sessions.pop(next(iter(self._sessions)))
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = _Session(now, now)
        return sid

    def check(self, sid: str) -> bool:
        """Whether ``sid`` is a live session; a live one counts as used now."""
        session = self._sessions.get(sid)
        if session is None:
            return False
        now = self.clock()
        if self._expired(session, now):
            del self._sessions[sid]
            return False
        session.seen = now
        return True

    def revoke(self, sid: str) -> bool:
        """End a session (logout); False when it did not exist."""
        return self._sessions.pop(sid, None) is not None

    def _expired(self, session: _Session, now: float) -> bool:
        return (now - session.seen >= self.idle_timeout
                or now - session.created >= self.max_age)

    def _expire(self, now: float) -> None:
        for sid in [s for s, v in self._sessions.items() if self._expired(v, now)]:
            del self._sessions[sid]
