"""What the broker does at each read of a DICOM socket (pynetdicom's one read function):

- a bound on the PDUs it reads: pynetdicom 3.0 reads whatever length a PDU header claims (up
  to 4 GiB) into memory before looking at it, so one peer could exhaust the broker's memory.
  A longer PDU is answered with an A-ABORT and its connection closed unread;
- no stall behind a peer's Nagle algorithm (broker.net.tcp): what was read is acknowledged
  at once, and the broker's own sockets (those of its SCU associations too) send each PDU
  at once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket

from broker.logs import event
from broker.net.tcp import acknowledge_now, no_delay

log = logging.getLogger("broker.dicom")

#: far above any negotiated Maximum Length Received (pynetdicom 16 KiB, DCMTK ≤ 128 KiB) and
#: above any A-ASSOCIATE-RQ with its user identity
MAX_PDU_BYTES = 4 << 20
INVALID_PDU_PARAMETER = 0x06
_original_recv = AssociationSocket.recv


def _stock_read(transport: Any, nr_bytes: int) -> bytearray:
    """pynetdicom's read, then the acknowledgement of what it read."""
    data: bytearray = _original_recv(transport, nr_bytes)
    acknowledge_now(transport.socket)
    return data


#: how a PDU's bytes are read (reads.read with ``dicom.fast_path``)
_read: Callable[[Any, int], bytearray] = _stock_read


def use_reader(reader: Callable[[Any, int], bytearray] | None) -> None:
    """Read PDUs with ``reader`` (None: pynetdicom's own read)."""
    global _read
    _read = reader or _stock_read


def _bounded_recv(self: Any, nr_bytes: int) -> bytearray:
    if nr_bytes <= MAX_PDU_BYTES:
        data = _read(self, nr_bytes)
        sock = self.socket
        if sock is not None and sock is not getattr(self, "_mwl_no_delay", None):
            no_delay(sock)  # once per socket: a requestor's is made by pynetdicom
            self._mwl_no_delay = sock
        return data
    event(log, "dicom_pdu_too_large", logging.WARNING, peer=_peer(self), claimed=nr_bytes,
          limit=MAX_PDU_BYTES)
    abort = A_ABORT_RQ()
    abort.source, abort.reason_diagnostic = 0x02, INVALID_PDU_PARAMETER
    with contextlib.suppress(Exception):  # the peer may be gone; it closes either way
        self.send(abort.encode())
    return bytearray()  # read as a closed transport: the association ends (Evt17, AA-4)


def _peer(sock: Any) -> str:
    try:
        host, port = sock.socket.getpeername()[:2]
        return f"{host}:{port}"
    except (AttributeError, OSError):
        return "?"


def install() -> None:
    """Install the bound (idempotent); it covers every association of the process."""
    AssociationSocket.recv = _bounded_recv  # type: ignore[method-assign]
