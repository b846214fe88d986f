"""Event-driven wake-ups for pynetdicom 3.0.4 (behind ``dicom.fast_path``): the DUL reactor
and the association's loop wait on their socket and queues instead of polling every
millisecond (an idle association cost ~3 % of a core; 64 of them starved the machine).
Timers (ARTIM, idle) are checked every 20 ms."""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import sys
import threading
import time as _time
from collections.abc import Callable
from typing import Any

import pynetdicom.association as _assoc_mod
import pynetdicom.dul as _dul_mod

from broker.dicom.pynetdicom_patches import reads

WAKE_TIMEOUT = 0.02
#: the association's loop, whose 1 ms poll sleep becomes a wait on its wake-up event
_ASSOCIATION_LOOP = _assoc_mod.Association._run_reactor.__code__


class _WakeQueue(queue.Queue[Any]):
    def __init__(self, wake: Callable[[], None]) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()


def _dul_init(self: Any, assoc: Any) -> None:
    _stock_dul_init(self, assoc)
    self._wake_r, self._wake_w = socket.socketpair()
    self._wake_r.setblocking(False)
    self._wake_w.setblocking(False)
    self._waiting = False

    def wake() -> None:
        if self._waiting:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")

    self.event_queue = _WakeQueue(wake)
    self.to_provider_queue = _WakeQueue(wake)


def _idle_wait(self: Any) -> None:
    self._waiting = True
    try:
        if self.to_provider_queue.qsize() or self.event_queue.qsize() or self._kill_thread:
            return
        readable = [self._wake_r]
        transport = self.socket
        sock = transport.socket if transport is not None and transport._is_connected else None
        if sock is not None:
            if hasattr(sock, "pending") and sock.pending():  # TLS-buffered bytes
                return
            if reads.buffered(transport):  # bytes read and not yet taken
                return
            readable.append(sock)
        try:
            ready, _, _ = select.select(readable, [], [], WAKE_TIMEOUT)
        except (OSError, ValueError):
            _time.sleep(0.001)
            return
        if self._wake_r in ready:
            try:
                while self._wake_r.recv(4096):
                    pass
            except OSError:
                pass
    finally:
        self._waiting = False


class _TimeShim:
    """``time`` for pynetdicom.association: the sleep of the association's loop (the one
    called from ``Association._run_reactor`` itself) waits on a wake-up event."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        if sys._getframe(1).f_code is _ASSOCIATION_LOOP:
            wake = getattr(threading.current_thread(), "_wake_event", None)
            if wake is not None:
                wake.wait(WAKE_TIMEOUT)
                wake.clear()
                return
        _time.sleep(seconds)


class _PauseRequest(threading.Event):
    """The association's reactor checkpoint: clearing it (a send_*() asking the reactor to
    pause) wakes the reactor at once, so the caller does not wait out its timeout."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self._wake = wake

    def clear(self) -> None:
        super().clear()
        self._wake.set()


def _assoc_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _stock_assoc_init(self, *args, **kwargs)
    wake = self._wake_event = threading.Event()
    self.dul.to_user_queue = _WakeQueue(wake.set)
    self.dimse.msg_queue = _WakeQueue(wake.set)
    checkpoint = _PauseRequest(wake)
    if self._reactor_checkpoint.is_set():
        checkpoint.set()
    self._reactor_checkpoint = checkpoint


def _kill(self: Any) -> None:
    wake = getattr(self, "_wake_event", None)
    if wake is not None:
        wake.set()
    _stock_kill(self)


def _close_wake(self: Any) -> None:
    """The end of a reactor: its wake-up sockets are closed."""
    self._waiting = False
    for s in (self._wake_r, self._wake_w):
        with contextlib.suppress(OSError):
            s.close()


_stock_dul_init = _dul_mod.DULServiceProvider.__init__
_stock_assoc_init = _assoc_mod.Association.__init__
_stock_kill = _assoc_mod.Association.kill
