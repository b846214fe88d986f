"""TCP options against the stall of a peer that leaves Nagle's algorithm on.

A peer that writes one request in two pieces (DCMTK ``findscu``: the command PDU, then the
data set PDU; an MLLP sender: start block, message, end block) with Nagle on holds the
second piece until the first is acknowledged. Linux delays that acknowledgement (up to
~40 ms, more on a quiet link) whenever it has no answer to carry it, so every request would
wait for the delayed-ACK timer before the broker even sees all of it. Re-arming
``TCP_QUICKACK`` after each read sends the pending acknowledgement at once (the kernel drops
quick-ack mode again by itself, hence after every read). ``TCP_NODELAY`` on the broker's own
sockets keeps its multi-piece writes (pynetdicom sends each PDU with its own call) from
waiting on the peer's delayed acknowledgement in the same way.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

#: Linux only; elsewhere a no-op
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def acknowledge_now(sock: Any) -> None:
    """Send the acknowledgement of what was just read without waiting for the timer."""
    if _QUICKACK is not None and sock is not None:
        with contextlib.suppress(OSError, AttributeError):  # closed, or not a TCP socket
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)


def no_delay(sock: Any) -> None:
    """Send each write at once (Nagle's algorithm off)."""
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
