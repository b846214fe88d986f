"""Admission of DICOM connections: at most so many open from one source address, and a
deadline for the association negotiation (from the TCP connect to a whole A-ASSOCIATE-RQ, a
TLS handshake included), so that one peer cannot hold every association slot.

A connection past its address's cap is answered, before any negotiation, with an
A-ASSOCIATE-RJ "rejected-transient, service provider (presentation), local-limit-exceeded"
(PS3.8 9.3.4) and closed: the answer pynetdicom and DCMTK SCPs give when their own association
limit is reached, which DCMTK SCUs report as such ("Local Limit Exceeded") and modalities treat
as "try again later", rather than a bare close that reads as a network failure.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker.net.peer_limits import PerAddressLimit

#: A-ASSOCIATE-RJ: result 2 rejected-transient, source 3 service provider (presentation
#: related function), reason 2 local-limit-exceeded
LOCAL_LIMIT_EXCEEDED = b"\x03\x00\x00\x00\x00\x04\x00\x02\x03\x02"
#: what is read (and dropped) from a refused connection before it is closed, so that an
#: A-ASSOCIATE-RQ already received does not turn the close into a reset that could lose the
#: rejection on its way
DRAIN_BYTES = 65536


@dataclass(eq=False)
class Connection:
    """One accepted connection holding a slot of its source address."""

    address: str
    peer: str
    request: Any
    deadline: float
    assoc: Any = None
    cut: bool = False

    @property
    def negotiated(self) -> bool:
        """A whole A-ASSOCIATE-RQ was read (the association may still be refused)."""
        return self.assoc is not None and self.assoc.requestor.primitive is not None


class Admission:
    """Per-address slots and negotiation deadlines of one listener (thread-safe)."""

    def __init__(self, limit: PerAddressLimit, negotiation_timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if negotiation_timeout <= 0:
            raise ValueError(f"a negotiation timeout must be more than 0 ({negotiation_timeout})")
        self.limit = limit
        self.negotiation_timeout = negotiation_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._open: dict[int, Connection] = {}  # by id() of the request socket
        self._deadlines: collections.deque[Connection] = collections.deque()

    def admit(self, request: Any, client_address: Any) -> Connection | None:
        """Take a slot for a new connection; None (nothing taken) when its address is full."""
        address, peer = _address(client_address)
        if not self.limit.acquire(address):
            return None
        conn = Connection(address, peer, request, self._clock() + self.negotiation_timeout)
        with self._lock:
            self._open[id(request)] = conn
            self._deadlines.append(conn)
        return conn

    def connection(self, request: Any) -> Connection | None:
        with self._lock:
            return self._open.get(id(request))

    def release(self, conn: Connection) -> None:
        """Give the slot back (once, however often it is called)."""
        with self._lock:
            if self._open.get(id(conn.request)) is not conn:
                return
            del self._open[id(conn.request)]
        self.limit.release(conn.address)

    def overdue(self) -> list[Connection]:
        """Open connections past their deadline without a whole A-ASSOCIATE-RQ (each is
        returned once, marked cut)."""
        now = self._clock()
        late: list[Connection] = []
        with self._lock:
            while self._deadlines and self._deadlines[0].deadline <= now:
                conn = self._deadlines.popleft()
                if self._open.get(id(conn.request)) is conn and not conn.negotiated:
                    conn.cut = True
                    late.append(conn)
        return late

    def held(self, address: str) -> int:
        return self.limit.held(address)


def refuse_busy(request: Any) -> None:
    """Answer a connection over its address's cap with LOCAL_LIMIT_EXCEEDED (plain TCP only:
    a TLS connection has no session to carry it yet), without ever blocking the acceptor."""
    if type(request) is not socket.socket:
        return
    with contextlib.suppress(OSError):
        request.setblocking(False)
        request.send(LOCAL_LIMIT_EXCEEDED)
        request.recv(DRAIN_BYTES)


def cut(request: Any) -> None:
    """End a connection from another thread: shutting both directions down wakes the
    reactor blocked reading it (with TLS, under the TLS layer, which then fails)."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(request, socket.SHUT_RDWR)


def _address(client_address: Any) -> tuple[str, str]:
    if isinstance(client_address, tuple):
        return str(client_address[0]), f"{client_address[0]}:{client_address[1]}"
    return str(client_address), str(client_address)
