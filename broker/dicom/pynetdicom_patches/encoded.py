"""Speed-ups on the wire for pynetdicom 3.0.4 (behind ``dicom.fast_path``).

- Pre-encoded identifiers: a handler may yield a :class:`PreEncoded` dataset that carries its
  bytes (built by broker.dicom.encoder); pynetdicom's per-response pydicom encoding (≈ 0.4 ms)
  is skipped for it.
- C-FIND responses and successful N-CREATE/N-SET responses are sent as one P-DATA-TF built
  with ``struct`` (the stock path builds the command set with pydicom twice and sends two PDUs:
  ≈ 0.27 ms); identifiers larger than the peer's maximum PDU go the stock way. The N-service
  responses are written by the handler's thread when the order allows (``writes``); the
  C-FIND responses go through the DUL thread, in state-machine order.
- Pending C-FIND responses after a query's first one are handed to the DUL thread
  ``COALESCE_RESPONSES`` at a time (one queue hand-off, reactor turn and socket write for
  them all instead of one each); the first goes at once, and any other message (the final
  response, a cancel, a failure, another service's) sends what is held before itself. The
  handler waits while more than ``MAX_GROUPS_QUEUED`` groups are still unwritten.
- N-CREATE-RQ and N-SET-RQ command sets are cut into their few elements with ``struct`` (no
  pydicom decoding), their primitives made from those elements; a SOP Class UID checked once
  is not checked again.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any

import pynetdicom.dimse as _dimse
import pynetdicom.dimse_messages as _messages
import pynetdicom.dsutils as _dsutils
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pynetdicom.dimse_primitives import C_FIND, N_CREATE, N_SET
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.utils import set_uid

from broker.dicom.pynetdicom_patches.writes import RawPData, write
from broker.dicom.status import CANCEL, PENDING, PENDING_WARNING, SUCCESS

_stock_encode = _dsutils.encode


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
FAST_STATUSES = frozenset({SUCCESS, PENDING, PENDING_WARNING, CANCEL})


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


_stock_send_msg = _dimse.DIMSEServiceProvider.send_msg
#: pending C-FIND responses (after a query's first) handed to the DUL thread at once
COALESCE_RESPONSES = 16
#: ... unless they reach this many bytes first
COALESCE_BYTES = 256 << 10
#: groups handed to the DUL thread and not yet written: past this the handler waits, so a long
#: answer is not all queued in memory ahead of the socket (and a C-CANCEL still finds the
#: search running)
MAX_GROUPS_QUEUED = 4


def _flush(self: Any) -> None:
    """Send the pending responses held back, if any; wait while the DUL thread is behind."""
    held: list[bytes] | None = self.__dict__.get("_mwl_held")
    if not held:
        return
    self._mwl_held = []
    dul = self.dul
    dul.send_pdu(RawPData(b"".join(held)))
    pause = 0.0005
    while (dul.to_provider_queue.qsize() > MAX_GROUPS_QUEUED and not dul._kill_thread
           and self.assoc.is_established):
        time.sleep(pause)
        pause = min(pause * 2, 0.005)  # a peer that stopped reading costs no busy wait


def _hold(self: Any, message_id: int, raw: bytes) -> None:
    """A pending C-FIND response: the first of its query at once, the next ones in groups."""
    if self.__dict__.get("_mwl_held_for") != message_id:
        _flush(self)
        self._mwl_held_for = message_id
        self.dul.send_pdu(RawPData(raw))
        return
    held: list[bytes] = self.__dict__.setdefault("_mwl_held", [])
    held.append(raw)
    if len(held) >= COALESCE_RESPONSES or sum(map(len, held)) >= COALESCE_BYTES:
        _flush(self)


def _send_msg(self: Any, primitive: Any, context_id: int) -> None:
    if (isinstance(primitive, C_FIND) and primitive.Status in (PENDING, PENDING_WARNING)
            and primitive.MessageIDBeingRespondedTo is not None):
        raw = _find_response(self, primitive, context_id)
        if raw is not None:
            _hold(self, primitive.MessageIDBeingRespondedTo, raw)
            return
    _flush(self)
    self.__dict__.pop("_mwl_held_for", None)
    field = N_RESPONSES.get(type(primitive))
    if field is not None:
        if (primitive.MessageIDBeingRespondedTo is None or primitive.Status != SUCCESS
                or primitive.AttributeList is not None or not primitive.AffectedSOPClassUID
                or not primitive.AffectedSOPInstanceUID):
            _stock_send_msg(self, primitive, context_id)
            return
        command = n_response_command(field, str(primitive.AffectedSOPClassUID),
                                     primitive.MessageIDBeingRespondedTo, SUCCESS,
                                     str(primitive.AffectedSOPInstanceUID))
        write(self.dul, _pdu(_pdv(context_id, 0x03, command)))
        return
    raw = None
    if (isinstance(primitive, C_FIND) and primitive.MessageIDBeingRespondedTo is not None
            and primitive.Status in FAST_STATUSES):  # failures carry Error Comment etc.
        raw = _find_response(self, primitive, context_id)
    if raw is None:
        _stock_send_msg(self, primitive, context_id)
    else:
        self.dul.send_pdu(RawPData(raw))


def _find_response(self: Any, primitive: Any, context_id: int) -> bytes | None:
    """A C-FIND-RSP as P-DATA-TF bytes, None when its identifier needs fragmenting."""
    identifier = primitive.Identifier
    data = identifier.getvalue() if identifier is not None else b""
    command = _pdv(context_id, 0x03, find_response_command(
        str(primitive.AffectedSOPClassUID), primitive.MessageIDBeingRespondedTo,
        int(primitive.Status or 0), bool(data)))
    limit = self.maximum_pdu_size or 0xFFFFFFFF  # the peer's Maximum Length Received
    if not data:
        return _pdu(command)
    pdv = _pdv(context_id, 0x02, data)
    if len(pdv) > limit:
        return None
    return _pdu(command + pdv) if len(command) + len(pdv) <= limit else (
        _pdu(command) + _pdu(pdv))


_stock_to_primitive = _messages.DIMSEMessage.message_to_primitive
#: the command elements of N-CREATE-RQ / N-SET-RQ a primitive takes (implicit VR LE)
_N_REQUEST_ELEMENTS = ((0x00000110, "MessageID"), (0x00000002, "AffectedSOPClassUID"),
                       (0x00000003, "RequestedSOPClassUID"),
                       (0x00001000, "AffectedSOPInstanceUID"),
                       (0x00001001, "RequestedSOPInstanceUID"))
_N_REQUESTS = {"N_CREATE_RQ": (N_CREATE, "AttributeList"),
               "N_SET_RQ": (N_SET, "ModificationList")}
#: where the primitives keep the SOP Class UIDs their setters checked
_CLASS_UID_ATTRIBUTES = {"AffectedSOPClassUID": "_affected_sop_class_uid",
                         "RequestedSOPClassUID": "_requested_sop_class_uid"}
_CLASS_UIDS: dict[str, UID] = {}


def _class_uid(value: str, keyword: str) -> UID:
    """A SOP Class UID checked as the primitive's setter checks it (ValueError when it is
    not a UID), once per value: an association sends the same one in every request."""
    uid = _CLASS_UIDS.get(value)
    if uid is None:
        checked = set_uid(value, keyword)
        if checked is None:
            raise ValueError(f"no {keyword}")
        uid = checked
        if len(_CLASS_UIDS) < 256:
            _CLASS_UIDS[value] = uid
    return uid


_stock_decode_msg = _messages.DIMSEMessage.decode_msg
#: CommandField → the message class of the requests whose command set is cut here
_N_REQUEST_FIELDS: dict[int, type] = {0x0140: _messages.N_CREATE_RQ,
                                      0x0120: _messages.N_SET_RQ}
_ELEMENT = struct.Struct("<HHI")


def _command_elements(data: bytes) -> dict[int, bytes] | None:
    """The elements of a whole command set (after its PDV's control byte), None when it is
    not a short, well-formed group 0000."""
    elements: dict[int, bytes] = {}
    end, at = len(data), 1
    while at < end:
        if end - at < 8 or len(elements) >= 8:
            return None
        group, element, length = _ELEMENT.unpack_from(data, at)
        at += 8
        if group != 0 or at + length > end:
            return None
        elements[element] = data[at:at + length]
        at += length
    return elements


def _us_value(value: bytes | None) -> int | None:
    return int.from_bytes(value, "little") if value is not None and len(value) == 2 else None


def _decode_msg(self: Any, primitive: Any, assoc: Any = None) -> bool:
    """pynetdicom's DIMSEMessage.decode_msg, with the command set of an N-CREATE-RQ or
    N-SET-RQ that comes whole in one PDV cut with ``struct``; anything else goes the stock
    way."""
    pdvs = primitive.presentation_data_value_list if primitive.__class__ is P_DATA else None
    if (not pdvs or self.encoded_command_set.tell() or pdvs[0][1][:1] not in (b"\x03",)
            or any(data[0] & 1 for _, data in pdvs[1:])):
        return bool(_stock_decode_msg(self, primitive, assoc))
    context_id, data = pdvs[0]
    elements = _command_elements(data)
    message_class = None
    if elements is not None:
        message_class = _N_REQUEST_FIELDS.get(_us_value(elements.get(0x0100)) or -1)
    dataset_type = _us_value(elements.get(0x0800)) if elements is not None else None
    if elements is None or message_class is None or dataset_type is None:
        return bool(_stock_decode_msg(self, primitive, assoc))
    self.encoded_command_set.write(data[1:])
    self.context_id = context_id
    self.command_set = Dataset({BaseTag(tag): RawDataElement(
        BaseTag(tag), None, len(value), value, 0, True, True, True, False)
        for tag, value in elements.items()})
    self.__class__ = message_class
    if dataset_type == 0x0101:
        return True
    for _, fragment in pdvs[1:]:
        self.data_set.write(fragment[1:])
        if fragment[0] & 2:
            return True
    return False


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
        stored = _CLASS_UID_ATTRIBUTES.get(keyword)
        if stored is not None and value:
            setattr(primitive, stored, _class_uid(value, keyword))
        else:
            setattr(primitive, keyword, value)
    setattr(primitive, dataset_keyword, self.data_set)
    primitive._context_id = self.context_id
    primitive._dataset_path = self._data_set_path
    primitive._dataset_file = self._data_set_file
    return primitive
