"""A lean DICOM upper-layer client for load generation: asyncio sockets and messages encoded
before the clock starts, so that the load generator's CPU (on the same small machine as the
broker) is not what a benchmark measures. It speaks real PS3.8 (A-ASSOCIATE, P-DATA-TF,
A-RELEASE); the DIMSE messages themselves are encoded by pynetdicom and pydicom.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pynetdicom.dimse_messages import C_ECHO_RQ, C_FIND_RQ, N_CREATE_RQ, N_SET_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, N_CREATE, N_SET

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.8.498.1"
VERIFICATION = "1.2.840.10008.1.1"
PENDING = frozenset({0xFF00, 0xFF01})
MAX_PDU = 65536
CONTEXT_ID = 1


class WireError(RuntimeError):
    """The peer rejected, aborted or answered something this client cannot read."""


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BxH", kind, len(body)) + body


def _uid(value: str) -> bytes:
    raw = value.encode()
    return raw + b"\0" if len(raw) % 2 else raw


def associate_rq(calling: str, called: str, abstract_syntax: str) -> bytes:
    context = _item(0x20, bytes([CONTEXT_ID, 0, 0, 0]) + _item(0x30, _uid(abstract_syntax))
                    + _item(0x40, _uid(IMPLICIT_VR_LE)))
    user = _item(0x50, _item(0x51, struct.pack(">I", MAX_PDU))
                 + _item(0x52, _uid(IMPLEMENTATION_UID)))
    body = (struct.pack(">H2x", 1) + called.ljust(16).encode()[:16]
            + calling.ljust(16).encode()[:16] + bytes(32)
            + _item(0x10, APPLICATION_CONTEXT.encode()) + context + user)
    return struct.pack(">BxI", 0x01, len(body)) + body


def encode_dataset(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _p_data(pdvs: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(struct.pack(">IBB", len(data) + 2, CONTEXT_ID, header) + data
                    for header, data in pdvs)
    return struct.pack(">BxI", 0x04, len(body)) + body


_MESSAGES = {N_CREATE: N_CREATE_RQ, N_SET: N_SET_RQ, C_FIND: C_FIND_RQ, C_ECHO: C_ECHO_RQ}


def _request(primitive: N_CREATE | N_SET | C_FIND | C_ECHO, dataset: bytes | None) -> bytes:
    message = _MESSAGES[type(primitive)]()
    message.primitive_to_message(primitive)
    message.data_set = None
    message.command_set.CommandDataSetType = 0x0101 if dataset is None else 0x0001
    message._set_command_group_length()
    command = encode_dataset(message.command_set)
    if dataset is None:
        return _p_data([(0x03, command)])
    return _p_data([(0x03, command)]) + _p_data([(0x02, dataset)])


def n_create(message_id: int, sop_class: str, sop_instance: str, dataset: bytes) -> bytes:
    """A whole N-CREATE-RQ (command and data set PDUs), ready to write."""
    primitive = N_CREATE()
    primitive.MessageID, primitive.AffectedSOPClassUID = message_id, sop_class
    primitive.AffectedSOPInstanceUID = sop_instance
    return _request(primitive, dataset)


def n_set(message_id: int, sop_class: str, sop_instance: str, dataset: bytes) -> bytes:
    primitive = N_SET()
    primitive.MessageID, primitive.RequestedSOPClassUID = message_id, sop_class
    primitive.RequestedSOPInstanceUID = sop_instance
    return _request(primitive, dataset)


def c_find(message_id: int, sop_class: str, identifier: bytes) -> bytes:
    """A whole C-FIND-RQ (medium priority) with its encoded identifier."""
    primitive = C_FIND()
    primitive.MessageID, primitive.AffectedSOPClassUID = message_id, sop_class
    primitive.Priority = 0x0000
    return _request(primitive, identifier)


def c_echo(message_id: int) -> bytes:
    primitive = C_ECHO()
    primitive.MessageID, primitive.AffectedSOPClassUID = message_id, VERIFICATION
    return _request(primitive, None)


def _command_elements(data: bytes) -> dict[int, bytes]:
    elements: dict[int, bytes] = {}
    offset = 0
    while offset + 8 <= len(data):
        group, element, length = struct.unpack_from("<HHI", data, offset)
        offset += 8
        elements[(group << 16) | element] = data[offset:offset + length]
        offset += length
    return elements


@dataclass(slots=True)
class Response:
    status: int
    message_id_responded: int
    comment: str = ""


class Association:
    """One association over asyncio streams: send pre-encoded requests, read statuses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int, calling: str, called: str,
                   abstract_syntax: str) -> Association:
        reader, writer = await asyncio.open_connection(host, port)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self = cls(reader, writer)
        writer.write(associate_rq(calling, called, abstract_syntax))
        kind, body = await self._pdu()
        if kind != 0x02:
            raise WireError(f"association not accepted (PDU type {kind:#04x})")
        if not self._context_accepted(body):
            raise WireError("presentation context rejected")
        return self

    @staticmethod
    def _context_accepted(body: bytes) -> bool:
        offset = 68
        while offset + 4 <= len(body):
            kind, length = struct.unpack_from(">BxH", body, offset)
            if kind == 0x21:
                return body[offset + 4] == CONTEXT_ID and body[offset + 6] == 0
            offset += 4 + length
        return False

    async def _pdu(self) -> tuple[int, bytes]:
        header = await self.reader.readexactly(6)
        kind, length = struct.unpack(">BxI", header)
        return kind, await self.reader.readexactly(length)

    async def request(self, encoded: bytes) -> Response:
        self.writer.write(encoded)
        return await self.response()

    async def find(self, encoded: bytes) -> tuple[int, Response]:
        """Send a C-FIND-RQ; the number of pending (matching) responses and the final one."""
        self.writer.write(encoded)
        matches = 0
        while (response := await self.response()).status in PENDING:
            matches += 1
        return matches, response

    async def response(self) -> Response:
        """Read one DIMSE message (its command and, when it has one, its data set)."""
        command = b""
        has_data = False
        data_done = True
        command_done = False
        while not (command_done and data_done):
            kind, body = await self._pdu()
            if kind != 0x04:
                raise WireError(f"expected P-DATA-TF, got PDU type {kind:#04x}")
            offset = 0
            while offset < len(body):
                (length,) = struct.unpack_from(">I", body, offset)
                header = body[offset + 5]
                value = body[offset + 6:offset + 4 + length]
                offset += 4 + length
                if header & 0x01:
                    command += value
                    if header & 0x02:
                        command_done = True
                        elements = _command_elements(command)
                        has_data = elements.get(0x00000800, b"\x01\x01") != b"\x01\x01"
                        data_done = not has_data
                elif header & 0x02:
                    data_done = True
        elements = _command_elements(command)
        status = struct.unpack("<H", elements[0x00000900])[0]
        responded = struct.unpack("<H", elements.get(0x00000120, b"\0\0"))[0]
        comment = elements.get(0x00000902, b"").decode("latin-1").rstrip("\0 ")
        return Response(status, responded, comment)

    async def release(self) -> None:
        self.writer.write(struct.pack(">BxI", 0x05, 4) + bytes(4))
        try:
            await asyncio.wait_for(self._pdu(), 5)
        finally:
            self.writer.close()
