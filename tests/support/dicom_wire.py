"""A raw DICOM peer on a socket: associate, send PDUs byte by byte, read what the broker answers."""

from __future__ import annotations

import select
import socket
import struct
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from benchmarks import dicom_wire

#: the whole of 127.0.0.0/8 is loopback: a second source address on this machine
OTHER = "127.0.0.2"
MWL = str(ModalityWorklistInformationFind)
FRAGMENT = 16 << 10  # a DCMTK-sized P-DATA-TF


def connect_from(source: str, port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10.0,
                                    source_address=(source, 0))


def read_pdu(sock: socket.socket) -> tuple[int, bytes] | None:
    """The next PDU (type, body), or None when the broker closed the connection."""
    try:
        header = _exactly(sock, 6)
        if header is None:
            return None
        kind, length = struct.unpack(">BxI", header)
        body = _exactly(sock, length)
    except ConnectionResetError:
        return None
    return None if body is None else (kind, body)


def _exactly(sock: socket.socket, count: int) -> bytes | None:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def associate(port: int, source: str = "127.0.0.1", calling: str = "LIMITS",
              abstract_syntax: str = MWL) -> socket.socket:
    sock = connect_from(source, port)
    sock.sendall(dicom_wire.associate_rq(calling, "MWLBROKER", abstract_syntax))
    answer = read_pdu(sock)
    assert answer is not None and answer[0] == 0x02, f"association not accepted: {answer}"
    return sock


def final_status(sock: socket.socket) -> int:
    """Read DIMSE responses until a final one; its status."""
    while True:
        command = b""
        while True:
            pdu = read_pdu(sock)
            assert pdu is not None and pdu[0] == 0x04, f"expected P-DATA-TF, got {pdu}"
            body, offset, done = pdu[1], 0, False
            while offset < len(body):
                (length,) = struct.unpack_from(">I", body, offset)
                header = body[offset + 5]
                if header & 0x01:
                    command += body[offset + 6:offset + 4 + length]
                    done = done or bool(header & 0x02)
                offset += 4 + length
            if done:
                break
        elements = dicom_wire._command_elements(command)
        status = int(struct.unpack("<H", elements[0x00000900])[0])
        if status not in dicom_wire.PENDING:
            return status


def echo(port: int, source: str = "127.0.0.1") -> int:
    with associate(port, source, abstract_syntax=dicom_wire.VERIFICATION) as sock:
        sock.sendall(dicom_wire.c_echo(1))
        return final_status(sock)


def find(port: int, source: str = "127.0.0.1") -> int:
    """A worklist C-FIND for every step; its final status."""
    identifier = dicom_wire.encode_dataset(mwl_query())
    with associate(port, source) as sock:
        sock.sendall(dicom_wire.c_find(1, MWL, identifier))
        return final_status(sock)


def mwl_query() -> Dataset:
    ds = Dataset()
    ds.PatientName = ""
    ds.PatientID = ""
    return ds


def closed_by_peer(sock: socket.socket, wait: float) -> bool:
    """Whether the broker closed ``sock`` within ``wait`` seconds (what it sent is dropped)."""
    sock.settimeout(wait)
    try:
        while sock.recv(1 << 16):
            pass
        return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def still_open(sock: socket.socket) -> bool:
    """Open, and nothing (no answer, no end) came on it."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.settimeout(10.0)


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


def stream_fragments(sock: socket.socket, total: int) -> int:
    """A C-FIND-RQ command, then non-final data set fragments until ``total`` bytes were sent
    or the broker answered (or closed); the bytes sent."""
    command = dicom_wire.c_find(1, MWL, b"")  # command PDU, then an empty data set PDU
    (command_length,) = struct.unpack_from(">I", command, 2)
    sock.sendall(command[:6 + command_length])
    pdv = struct.pack(">IBB", FRAGMENT + 2, dicom_wire.CONTEXT_ID, 0x00) + b"\0" * FRAGMENT
    pdu = struct.pack(">BxI", 0x04, len(pdv)) + pdv
    sent = 0
    while sent < total:
        if select.select([sock], [], [], 0)[0]:
            break
        try:
            sock.sendall(pdu)
        except OSError:
            break
        sent += FRAGMENT
    return sent
