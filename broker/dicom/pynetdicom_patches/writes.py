"""Who writes an association's socket (pynetdicom 3.0.4, behind ``dicom.fast_path``).

Stock pynetdicom hands every PDU to the DUL thread: the handler's thread queues it, wakes
the reactor, and the reactor writes it — two thread switches and four system calls for
each response. A pre-encoded response (``encoded.RawPData``) is written here by the thread
that made it instead, when that keeps the stock order and state rules:

- the association is in Sta6 (established, no release under way) on a plain TCP socket
  (an ``ssl.SSLSocket`` is never read and written from two threads at once);
- no P-DATA handed to the DUL thread earlier is still unwritten (it would be overtaken);
- no A-RELEASE or A-ABORT has been sent (after one, nothing more goes this way).

Every write, the DUL thread's and this one, holds the association's write lock, so PDUs
never interleave. Anything else goes the stock way, through the DUL thread.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from typing import Any

import pynetdicom.dul as _dul_mod
from pynetdicom.pdu import A_ABORT_RQ, A_RELEASE_RP, A_RELEASE_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA


class RawPData(P_DATA):
    """A P-DATA primitive whose P-DATA-TF bytes are already encoded."""

    def __init__(self, raw: bytes) -> None:
        super().__init__()
        self.raw = raw


#: the PDUs after which this thread writes nothing more itself
_ENDINGS = (A_RELEASE_RQ, A_RELEASE_RP, A_ABORT_RQ)


class Writes:
    """One association's writes: the lock, the P-DATA queued to its DUL thread and not yet
    written, and whether an A-RELEASE or A-ABORT has been sent."""

    __slots__ = ("direct", "lock", "other_sent", "queued")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queued = 0
        self.other_sent = False
        self.direct = 0  # P-DATA written by the thread that made them (for tests, metrics)


def writes_of(dul: Any) -> Writes:
    """The association's write state (made on first use)."""
    state: Writes | None = dul.__dict__.get("_mwl_writes")
    if state is None:
        state = dul.__dict__.setdefault("_mwl_writes", Writes())
    return state


def write(dul: Any, raw: bytes) -> None:
    """Write a pre-encoded P-DATA-TF now, from this thread, if the order allows; else hand
    it to the DUL thread."""
    state = writes_of(dul)
    transport = dul.socket
    with state.lock:
        if (state.queued == 0 and not state.other_sent and transport is not None
                and transport.socket is not None
                and not isinstance(transport.socket, ssl.SSLSocket)
                and dul.state_machine.current_state == "Sta6"
                and dul.assoc.is_established and not dul._kill_thread):
            state.direct += 1
            transport.send(raw)  # a failed write puts Evt17 on the DUL's queue, as stock
            return
    dul.send_pdu(RawPData(raw))


def _send_pdu(self: Any, primitive: Any) -> None:
    if isinstance(primitive, P_DATA):
        state = writes_of(self)
        with state.lock:
            state.queued += 1
    _stock_send_pdu(self, primitive)


def _send(self: Any, pdu: Any) -> None:
    """Every PDU the DUL thread writes, under the write lock."""
    state = writes_of(self)
    with state.lock:
        if isinstance(pdu, _ENDINGS):
            state.other_sent = True
        _stock_send(self, pdu)


def data_transfer_action(next_state: str) -> Callable[[Any], str]:
    """The DUL's P-DATA write (fsm DT-1 in Sta6, AR-7 in Sta8), for raw and stock P-DATA."""
    def action(dul: Any) -> str:
        primitive = dul.to_provider_queue.get(False)
        state = writes_of(dul)
        if isinstance(primitive, RawPData):
            with state.lock:
                if dul.socket is not None:
                    dul.socket.send(primitive.raw)
        else:
            dul._send(P_DATA_TF(primitive))
        with state.lock:
            state.queued -= 1
        return next_state
    return action


_stock_send_pdu = _dul_mod.DULServiceProvider.send_pdu
_stock_send = _dul_mod.DULServiceProvider._send


def install() -> None:
    _dul_mod.DULServiceProvider.send_pdu = _send_pdu  # type: ignore[method-assign]
    _dul_mod.DULServiceProvider._send = _send  # type: ignore[method-assign]


def remove() -> None:
    _dul_mod.DULServiceProvider.send_pdu = _stock_send_pdu  # type: ignore[method-assign]
    _dul_mod.DULServiceProvider._send = _stock_send  # type: ignore[method-assign]
