"""Buffered reads of an association's socket (pynetdicom 3.0.4, behind ``dicom.fast_path``).

Stock pynetdicom reads each PDU with three system calls (a ``select`` to see whether
anything came, the 6-byte header, the rest), and a request of a command PDU and a data set
PDU with six; each of them gives up the GIL, which another thread then holds when the
reactor wants it back. Here one ``recv`` takes whatever the kernel has (up to
:data:`CHUNK` bytes, or the whole PDU when it is longer) and the PDUs are cut from that
buffer; while it holds bytes the socket counts as ready without asking the kernel.
Each read of the socket itself is acknowledged at once (broker.net.tcp).
"""

from __future__ import annotations

from typing import Any

from pynetdicom.transport import AssociationSocket

from broker.net.tcp import acknowledge_now

#: the most one read of the socket asks for, unless a PDU needs more
CHUNK = 64 << 10


def buffered(transport: Any) -> bytearray | None:
    """The bytes read from the transport's socket and not yet taken, if any."""
    buffer: bytearray | None = transport.__dict__.get("_mwl_buffer")
    return buffer


def read(transport: Any, nr_bytes: int) -> bytearray:
    """``nr_bytes`` from the buffer, reading the socket as needed; fewer when the peer
    closed (as stock)."""
    buffer: bytearray | None = transport.__dict__.get("_mwl_buffer")
    if buffer is None:
        buffer = transport._mwl_buffer = bytearray()
    sock = transport.socket
    while len(buffer) < nr_bytes:
        chunk = sock.recv(max(CHUNK, nr_bytes - len(buffer)))
        if not chunk:
            break
        buffer += chunk
        acknowledge_now(sock)
    data = buffer[:nr_bytes]
    del buffer[:nr_bytes]
    return data


def _ready(self: Any) -> bool:
    if self.__dict__.get("_mwl_buffer") and self.socket is not None:
        return True
    return bool(_stock_ready.fget(self))


def _close(self: Any) -> None:
    self.__dict__.pop("_mwl_buffer", None)
    _stock_close(self)


_stock_ready: Any = vars(AssociationSocket)["ready"]
_stock_close = AssociationSocket.close


def install() -> None:
    setattr(AssociationSocket, "ready", property(_ready))  # noqa: B010 - a property
    AssociationSocket.close = _close  # type: ignore[method-assign]


def remove() -> None:
    setattr(AssociationSocket, "ready", _stock_ready)  # noqa: B010 - a property
    AssociationSocket.close = _stock_close  # type: ignore[method-assign]
