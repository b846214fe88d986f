"""Speed-ups for pynetdicom 3.0.4 on the worklist's hot path, applied once at start-up.

Measured on this project's 2-core machines (36-match worklist query, kept association):
stock pynetdicom with TCP_NODELAY ≈ 37 ms of server time; with these ≈ 2–3 ms.

1. Logging of every DIMSE message and identifier is switched off (pynetdicom formats each
   identifier with ``pretty_dataset()`` even when DEBUG is off: ≈ 0.14 ms a response).
2. Pre-encoded identifiers: a handler may yield a :class:`PreEncoded` dataset that carries
   its bytes (built by broker.dicom.encoder); pynetdicom's per-response pydicom encoding
   (≈ 0.4 ms) is skipped for it.
3. C-FIND responses are sent as one P-DATA-TF holding the command and the data PDVs, built
   with ``struct`` (the stock path builds the command set with pydicom twice and sends two
   PDUs: ≈ 0.27 ms). The DUL thread still does every socket write, in state-machine order;
   identifiers larger than the peer's maximum PDU go the stock way.
4. Responses the requestor's reactor takes by mistake are handed back: pynetdicom 3.0.4's
   requestor pauses its reactor with a flag that can be stale, so against a fast SCP the
   reactor sometimes takes the first C-FIND response off the queue before send_c_find()
   reads it, and drops it (seen as 35 of 36 matches with 16 concurrent associations).
5. Event-driven wake-ups: the DUL reactor and the association's loop wait on their socket
   and queues instead of polling every millisecond (an idle association cost ~3 % of a
   core; 64 of them starved the machine). Timers (ARTIM, idle) are checked every 20 ms.

These replace private pynetdicom internals, so :func:`apply` refuses any version other than
the one they were written and tested against; the broker then runs on stock pynetdicom.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import struct
import threading
import time as _time
from collections.abc import Callable
from typing import Any

import pynetdicom
import pynetdicom.association as _assoc_mod
import pynetdicom.dimse as _dimse
import pynetdicom.dimse_messages as _messages
import pynetdicom.dul as _dul_mod
import pynetdicom.fsm as _fsm
import pynetdicom.service_class as _service_class
from pydicom.dataset import Dataset
from pynetdicom import _config
from pynetdicom.dimse_primitives import C_FIND, N_CREATE, N_SET
from pynetdicom.dsutils import encode as _stock_encode
from pynetdicom.pdu import A_ABORT_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from broker.logs import event

log = logging.getLogger("broker.dicom")
SUPPORTED_VERSION = "3.0.4"
WAKE_TIMEOUT = 0.02
_applied = False


class PreEncoded(Dataset):
    """An empty dataset standing for identifier bytes already encoded for one transfer
    syntax (implicit or explicit VR, little endian); ``dataset`` is the readable form."""

    def __init__(self, data: bytes, implicit: bool, dataset: Callable[[], Dataset]) -> None:
        super().__init__()
        object.__setattr__(self, "_bytes", data)
        object.__setattr__(self, "_implicit", implicit)
        object.__setattr__(self, "_readable", dataset)

    def encoded_for(self, implicit: bool) -> bytes | None:
        return self._bytes if implicit == self._implicit else None

    def readable(self) -> Dataset:
        dataset: Dataset = self._readable()
        return dataset


def _encode(ds: Any, is_implicit_vr: bool, is_little_endian: bool,
            deflated: bool = False) -> bytes | None:
    if isinstance(ds, PreEncoded) and is_little_endian and not deflated:
        data = ds.encoded_for(is_implicit_vr)
        if data is not None:
            return data
        ds = ds.readable()
    return _stock_encode(ds, is_implicit_vr, is_little_endian, deflated)


# -- C-FIND response as one pre-built PDU -------------------------------------------------
_COMMANDS: dict[tuple[str, int, int, bool], bytes] = {}
#: statuses whose response command set has no elements beyond the status itself
FAST_STATUSES = frozenset({0x0000, 0xFF00, 0xFF01, 0xFE00})


def _us(element: int, value: int) -> bytes:
    return struct.pack("<HHIH", 0, element, 2, value)


def find_response_command(sop_class: str, message_id: int, status: int,
                          has_dataset: bool) -> bytes:
    """The C-FIND-RSP command set (implicit VR LE), same elements and order as pynetdicom."""
    key = (sop_class, message_id, status, has_dataset)
    cached = _COMMANDS.get(key)
    if cached is None:
        uid = sop_class.encode("ascii")
        uid += b"\0" * (len(uid) % 2)
        body = (struct.pack("<HHI", 0, 0x0002, len(uid)) + uid + _us(0x0100, 0x8020)
                + _us(0x0120, message_id) + _us(0x0800, 0x0001 if has_dataset else 0x0101)
                + _us(0x0900, status))
        cached = struct.pack("<HHII", 0, 0x0000, 4, len(body)) + body
        if len(_COMMANDS) > 4096:
            _COMMANDS.clear()
        _COMMANDS[key] = cached
    return cached


def _ui(element: int, uid: str) -> bytes:
    raw = uid.encode("ascii")
    raw += b"\0" * (len(raw) % 2)
    return struct.pack("<HHI", 0, element, len(raw)) + raw


#: the command fields of the N-service responses sent on the fast path
N_RESPONSES = {N_CREATE: 0x8140, N_SET: 0x8120}


def n_response_command(command_field: int, sop_class: str, message_id: int, status: int,
                       sop_instance: str) -> bytes:
    """A successful N-CREATE-RSP / N-SET-RSP command set without a data set (implicit VR LE),
    the same elements and order as pynetdicom."""
    body = (_ui(0x0002, sop_class) + _us(0x0100, command_field) + _us(0x0120, message_id)
            + _us(0x0800, 0x0101) + _us(0x0900, status) + _ui(0x1000, sop_instance))
    return struct.pack("<HHII", 0, 0x0000, 4, len(body)) + body


def _pdv(context_id: int, control: int, fragment: bytes) -> bytes:
    return struct.pack(">IBB", len(fragment) + 2, context_id, control) + fragment


def _pdu(pdvs: bytes) -> bytes:
    return b"\x04\x00" + struct.pack(">I", len(pdvs)) + pdvs


class RawPData(P_DATA):
    """A P-DATA primitive whose P-DATA-TF bytes are already encoded."""

    def __init__(self, raw: bytes) -> None:
        super().__init__()
        self.raw = raw


def _data_transfer_action(next_state: str) -> Callable[[Any], str]:
    def action(dul: Any) -> str:  # replaces fsm DT-1 (Sta6) and AR-7 (Sta8)
        primitive = dul.to_provider_queue.get(False)
        if isinstance(primitive, RawPData):
            if dul.socket is not None:
                dul.socket.send(primitive.raw)
        else:
            dul._send(P_DATA_TF(primitive))
        return next_state
    return action


_stock_send_msg = _dimse.DIMSEServiceProvider.send_msg


def _send_msg(self: Any, primitive: Any, context_id: int) -> None:
    field = N_RESPONSES.get(type(primitive))
    if field is not None:
        if (primitive.MessageIDBeingRespondedTo is None or primitive.Status != 0x0000
                or primitive.AttributeList is not None or not primitive.AffectedSOPClassUID
                or not primitive.AffectedSOPInstanceUID):
            _stock_send_msg(self, primitive, context_id)
            return
        command = n_response_command(field, str(primitive.AffectedSOPClassUID),
                                     primitive.MessageIDBeingRespondedTo, 0x0000,
                                     str(primitive.AffectedSOPInstanceUID))
        self.dul.send_pdu(RawPData(_pdu(_pdv(context_id, 0x03, command))))
        return
    if (not isinstance(primitive, C_FIND) or primitive.MessageIDBeingRespondedTo is None
            or primitive.Status not in FAST_STATUSES):  # failures carry Error Comment etc.
        _stock_send_msg(self, primitive, context_id)
        return
    identifier = primitive.Identifier
    data = identifier.getvalue() if identifier is not None else b""
    command = _pdv(context_id, 0x03, find_response_command(
        str(primitive.AffectedSOPClassUID), primitive.MessageIDBeingRespondedTo,
        int(primitive.Status or 0), bool(data)))
    limit = self.maximum_pdu_size or 0xFFFFFFFF  # the peer's Maximum Length Received
    if not data:
        raw = _pdu(command)
    else:
        pdv = _pdv(context_id, 0x02, data)
        if len(pdv) > limit:
            _stock_send_msg(self, primitive, context_id)
            return
        raw = _pdu(command + pdv) if len(command) + len(pdv) <= limit else (
            _pdu(command) + _pdu(pdv))
    self.dul.send_pdu(RawPData(raw))


# -- event-driven reactors --------------------------------------------------------------
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


def _run_reactor(self: Any) -> None:
    """pynetdicom 3.0.4's DUL reactor with its idle sleep replaced by a select()."""
    self._idle_timer.start()
    try:
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:
                _abort(self, exc)
                return
            try:
                evt_name = self.event_queue.get(block=False)
            except queue.Empty:
                _idle_wait(self)
                continue
            try:
                self.state_machine.do_action(evt_name)
            except Exception as exc:  # e.g. a command set without CommandField (a bad peer)
                _abort(self, exc)
                return
            _release_if_closed_unassociated(self)
    finally:
        self._waiting = False
        for s in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                s.close()


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
    """``time`` for pynetdicom.association: its 1 ms loop sleep waits on a wake-up event."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        thread = threading.current_thread()
        if seconds == 0.001:
            wake = getattr(thread, "_wake_event", None)
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


def _serve_request(self: Any, msg: Any, context_id: int) -> None:
    if self.is_requestor and getattr(msg, "MessageIDBeingRespondedTo", None) is not None:
        pending = self.dimse.msg_queue
        with pending.mutex:  # back to the front, for the send_*() call waiting for it
            pending.queue.appendleft((context_id, msg))
            pending.not_empty.notify()
        return
    _stock_serve_request(self, msg, context_id)


_stock_serve_request = _assoc_mod.Association._serve_request
_stock_to_primitive = _messages.DIMSEMessage.message_to_primitive
#: the command elements of N-CREATE-RQ / N-SET-RQ a primitive takes (implicit VR LE)
_N_REQUEST_ELEMENTS = ((0x00000110, "MessageID"), (0x00000002, "AffectedSOPClassUID"),
                       (0x00000003, "RequestedSOPClassUID"),
                       (0x00001000, "AffectedSOPInstanceUID"),
                       (0x00001001, "RequestedSOPInstanceUID"))
_N_REQUESTS = {"N_CREATE_RQ": (N_CREATE, "AttributeList"),
               "N_SET_RQ": (N_SET, "ModificationList")}


def _message_to_primitive(self: Any) -> Any:
    """N-CREATE-RQ and N-SET-RQ from their few command elements, read from the raw bytes
    (pynetdicom converts every element of the command set through pydicom); the primitive's
    own setters still check each value. Anything unusual goes the stock way."""
    kind = _N_REQUESTS.get(type(self).__name__)
    if kind is None:
        return _stock_to_primitive(self)
    elements = self.command_set._dict
    if len(elements) > 8:  # something more than the usual elements: let pynetdicom read it
        return _stock_to_primitive(self)
    primitive_class, dataset_keyword = kind
    primitive = primitive_class()
    for tag, keyword in _N_REQUEST_ELEMENTS:
        element = elements.get(tag)
        if element is None or not hasattr(primitive, keyword):
            continue
        value = element.value
        if isinstance(value, (bytes, bytearray)):
            if tag == 0x00000110:
                if len(value) != 2:
                    return _stock_to_primitive(self)
                value = int.from_bytes(value, "little")
            else:
                value = bytes(value).decode("ascii").rstrip("\0 ")
        setattr(primitive, keyword, value)
    setattr(primitive, dataset_keyword, self.data_set)
    primitive._context_id = self.context_id
    primitive._dataset_path = self._data_set_path
    primitive._dataset_file = self._data_set_file
    return primitive
_stock_dul_init = _dul_mod.DULServiceProvider.__init__
_stock_assoc_init = _assoc_mod.Association.__init__
_stock_kill = _assoc_mod.Association.kill


def apply() -> bool:
    """Install the speed-ups (once); False, with a warning, on another pynetdicom version."""
    global _applied
    if _applied:
        return True
    if pynetdicom.__version__ != SUPPORTED_VERSION:
        event(log, "dicom_fast_path_unavailable", logging.WARNING,
              found=pynetdicom.__version__, needs=SUPPORTED_VERSION)
        return False
    _config.LOG_HANDLER_LEVEL = "none"
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    setattr(_service_class, "encode", _encode)  # noqa: B010 - not exported, still replaced
    for name, state in (("DT-1", "Sta6"), ("AR-7", "Sta8")):
        description, _, next_state = _fsm.ACTIONS[name]
        _fsm.ACTIONS[name] = (description, _data_transfer_action(state),  # type: ignore[assignment]
                              next_state)
    _dimse.DIMSEServiceProvider.send_msg = _send_msg  # type: ignore[method-assign]
    _dul_mod.DULServiceProvider.__init__ = _dul_init  # type: ignore[method-assign]
    _dul_mod.DULServiceProvider.run_reactor = _run_reactor  # type: ignore[method-assign]
    _assoc_mod.Association.__init__ = _assoc_init  # type: ignore[method-assign]
    _assoc_mod.Association.kill = _kill  # type: ignore[method-assign]
    _assoc_mod.Association._serve_request = _serve_request  # type: ignore[method-assign]
    _messages.DIMSEMessage.message_to_primitive = (  # type: ignore[method-assign]
        _message_to_primitive)
    setattr(_assoc_mod, "time", _TimeShim())  # noqa: B010 - not exported, still replaced
    _applied = True
    event(log, "dicom_fast_path_applied", pynetdicom=pynetdicom.__version__)
    return True
