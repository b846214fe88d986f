"""Fixes to pynetdicom 3.0.4, always applied (with or without ``dicom.fast_path``).

1. The requestor race: a requestor's association reactor may take a response off the DIMSE
   queue before the ``send_*()`` call waiting for it reads it, and drops it
   (docs/pynetdicom-requestor-race.md); such a response is put back at the front.
2. Reactor abort: an exception in the DUL reactor (a command set without CommandField from a
   bad peer) aborts the association and closes its socket, instead of the reactor thread dying
   with the connection left open (stock sends the A-ABORT unguarded and never closes).
3. Slot release: a connection closed before any A-ASSOCIATE-RQ wakes the association waiting
   for one, so it ends now instead of holding an association slot for the ACSE timeout.
4. The PDU bound (pdu_bound) and the DIMSE message bound (message_bound).
5. Reading while sending: the stock reactor reads the socket only when it has nothing left to
   send, so an SCP answering a long C-FIND faster than the network drains never reads the
   peer's C-CANCEL (or A-ABORT) until every answer is out; here every ``READ_EVERY``-th turn
   of a busy reactor looks at the socket first.
6. Release of an association that ended meanwhile: ``Association.release`` waits, without a
   bound, for the reactor to pause; when the reactor has ended instead (the peer released or
   aborted between the check and the wait) it never pauses and the caller spins for ever
   (a storage commitment request's thread, so the broker could not exit). Here the wait ends
   when the association's thread has ended, and after the ACSE timeout it aborts.

The DUL reactor is the stock one with 2, 3 and 5 added; it waits through two hooks,
``_reactor_idle`` (stock: sleep ``_run_loop_delay``) and ``_reactor_done``, which the
speed-ups replace with event-driven wake-ups.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import time
from typing import Any

import pynetdicom.association as _assoc_mod
import pynetdicom.dul as _dul_mod
from pynetdicom.pdu import A_ABORT_RQ

from broker.dicom.pynetdicom_patches import message_bound, pdu_bound

_stock_serve_request = _assoc_mod.Association._serve_request
_stock_release = _assoc_mod.Association.release
_stock_run_reactor = _dul_mod.DULServiceProvider.run_reactor
#: a busy reactor looks for incoming PDUs at least once in this many turns
READ_EVERY = 8


def _serve_request(self: Any, msg: Any, context_id: int) -> None:
    if self.is_requestor and getattr(msg, "MessageIDBeingRespondedTo", None) is not None:
        pending = self.dimse.msg_queue
        with pending.mutex:  # back to the front, for the send_*() call waiting for it
            pending.queue.appendleft((context_id, msg))
            pending.not_empty.notify()
        return
    _stock_serve_request(self, msg, context_id)


def _release(self: Any) -> None:
    """pynetdicom 3.0.4's release, with the wait for the reactor to pause bounded (6.)."""
    if not self.is_established:
        return
    self._reactor_checkpoint.clear()
    deadline = time.monotonic() + (self.acse_timeout or 30.0)
    while not self._is_paused:
        if not self.is_alive() or not self.is_established:  # the reactor has ended
            self._reactor_checkpoint.set()
            return
        if time.monotonic() > deadline:
            self._reactor_checkpoint.set()
            logging.getLogger("pynetdicom.association").warning(
                "the association's reactor did not pause within the ACSE timeout: aborted")
            self.abort()
            return
        time.sleep(0.0001)
    logging.getLogger("pynetdicom.association").info("Releasing Association")
    self.acse.negotiate_release()
    self._reactor_checkpoint.set()


def _run_reactor(self: Any) -> None:
    """pynetdicom 3.0.4's DUL reactor, aborting on any error and releasing a slot held by a
    connection that closed unassociated."""
    self._idle_timer.start()
    turn = 0
    try:
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            turn += 1
            try:
                # one event per turn, as stock; a busy turn reads first now and then
                if (turn % READ_EVERY == 0 and self.state_machine.current_state == "Sta6"
                        and self._is_transport_event()):
                    self._idle_timer.restart()
                elif self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:
                _abort(self, exc)
                return
            try:
                evt_name = self.event_queue.get(block=False)
            except queue.Empty:
                self._reactor_idle()
                continue
            try:
                self.state_machine.do_action(evt_name)
            except Exception as exc:  # e.g. a command set without CommandField (a bad peer)
                _abort(self, exc)
                return
            _release_if_closed_unassociated(self)
    finally:
        self._reactor_done()


def _stock_idle(self: Any) -> None:
    time.sleep(self._run_loop_delay)


def _nothing(self: Any) -> None:
    """Nothing to clean up after the stock reactor."""


def _release_if_closed_unassociated(self: Any) -> None:
    """A connection closed (or aborted) before any A-ASSOCIATE-RQ was read: wake the
    association that waits for one, so that it ends now instead of holding an association
    slot for the whole ACSE timeout (a stream of bad connections could fill them all)."""
    if (self.state_machine.current_state == "Sta1" and self.assoc.is_acceptor
            and not self.assoc.is_established and not getattr(self, "_woke_user", False)):
        self._woke_user = True
        self.to_user_queue.put(None)


def _abort(self: Any, exc: Exception) -> None:
    """Abort the association after an error in its reactor, instead of the reactor thread
    dying with the connection left open."""
    logging.getLogger("pynetdicom.dul").exception(
        "Exception in DUL.run(), aborting association: %s", exc)
    abort = A_ABORT_RQ()
    abort.source = 0x02
    abort.reason_diagnostic = 0x00
    with contextlib.suppress(Exception):  # the socket may be closed already
        self.socket.send(abort.encode())
    self.assoc.is_aborted = True
    self.assoc.is_established = False
    self.assoc._kill = True
    self._kill_thread = True
    with contextlib.suppress(Exception):
        self.socket.close()


def use_idle(idle: Any, done: Any) -> None:
    """Set how the reactor waits when it has nothing to do, and what it does at its end."""
    _dul_mod.DULServiceProvider._reactor_idle = idle  # type: ignore[attr-defined]
    _dul_mod.DULServiceProvider._reactor_done = done  # type: ignore[attr-defined]


def use_stock_idle() -> None:
    """The stock wait: sleep ``_run_loop_delay`` (1 ms) between polls."""
    use_idle(_stock_idle, _nothing)


def apply(max_message_bytes: int) -> None:
    """Install the fixes (idempotent); ``max_message_bytes`` bounds the DIMSE messages of
    associations that have no server with a bound of its own."""
    if getattr(_dul_mod.DULServiceProvider, "_reactor_idle", None) is None:
        use_stock_idle()
    _dul_mod.DULServiceProvider.run_reactor = _run_reactor  # type: ignore[method-assign]
    _assoc_mod.Association._serve_request = _serve_request  # type: ignore[method-assign]
    _assoc_mod.Association.release = _release  # type: ignore[method-assign]
    pdu_bound.install()
    message_bound.install(max_message_bytes)
