"""The N-service request path of the speed-ups (pynetdicom_patches): a response written by the
handler's thread only when that keeps the order (writes), PDUs cut from one buffered read
(reads), and N-CREATE-RQ / N-SET-RQ command sets cut with struct (encoded._decode_msg) into
the same primitives pynetdicom makes."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from io import BytesIO
from typing import Any

import pynetdicom.dimse_messages as messages
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_ECHO, N_CREATE, N_SET
from pynetdicom.dsutils import encode
from pynetdicom.pdu import A_ABORT_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from broker.dicom import pynetdicom_patches
from broker.dicom.pynetdicom_patches import encoded, reads, writes

MPPS = ModalityPerformedProcedureStep


@pytest.fixture(autouse=True)
def fast_path() -> None:
    pynetdicom_patches.apply(fast_path=True)


# -- writes ------------------------------------------------------------------------------
class _Transport:
    def __init__(self, sock: Any) -> None:
        self.socket = sock
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)


class _StateMachine:
    current_state = "Sta6"


class _Assoc:
    is_established = True

    def get_handlers(self, event: Any) -> list[Any]:
        return []


class _Dul:
    """The parts of a DULServiceProvider that writes.write looks at."""

    def __init__(self, sock: Any) -> None:
        self.socket = _Transport(sock)
        self.state_machine = _StateMachine()
        self.assoc = _Assoc()
        self._kill_thread = False
        self.handed: list[Any] = []

    def send_pdu(self, primitive: Any) -> None:
        self.handed.append(primitive)


@pytest.fixture()
def plain() -> Iterator[socket.socket]:
    a, b = socket.socketpair()
    yield a
    a.close()
    b.close()


def test_a_response_with_nothing_before_it_is_written_at_once(plain: socket.socket) -> None:
    dul = _Dul(plain)
    writes.write(dul, b"response")
    assert dul.socket.sent == [b"response"] and not dul.handed
    assert writes.writes_of(dul).direct == 1


def test_a_response_behind_an_unwritten_p_data_waits_its_turn(plain: socket.socket) -> None:
    dul = _Dul(plain)
    writes.writes_of(dul).queued = 1  # handed to the DUL thread, not yet written
    writes.write(dul, b"second")
    assert not dul.socket.sent
    assert [p.raw for p in dul.handed] == [b"second"]


@pytest.mark.parametrize("state", ["Sta7", "Sta8", "Sta13"])
def test_no_response_is_written_here_outside_sta6(plain: socket.socket, state: str) -> None:
    dul = _Dul(plain)
    dul.state_machine.current_state = state
    writes.write(dul, b"late")
    assert not dul.socket.sent and len(dul.handed) == 1


def test_nothing_is_written_here_after_an_abort_or_release(plain: socket.socket) -> None:
    dul = _Dul(plain)
    abort = A_ABORT_RQ()
    abort.source, abort.reason_diagnostic = 0x02, 0x00
    writes._send(dul, abort)  # the DUL thread's write of the A-ABORT
    assert len(dul.socket.sent) == 1
    writes.write(dul, b"after")
    assert len(dul.socket.sent) == 1 and len(dul.handed) == 1


def test_a_tls_socket_is_written_only_by_the_dul_thread(plain: socket.socket) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls = context.wrap_socket(plain, server_hostname="peer", do_handshake_on_connect=False)
    try:
        dul = _Dul(tls)
        writes.write(dul, b"tls")
        assert not dul.socket.sent and len(dul.handed) == 1
    finally:
        tls.detach()


def test_the_dul_thread_counts_down_what_it_wrote(plain: socket.socket) -> None:
    import queue

    dul = _Dul(plain)
    dul.to_provider_queue = queue.Queue()  # type: ignore[attr-defined]
    state = writes.writes_of(dul)
    state.queued = 1
    dul.to_provider_queue.put(writes.RawPData(b"queued"))  # type: ignore[attr-defined]
    assert writes.data_transfer_action("Sta6")(dul) == "Sta6"
    assert state.queued == 0 and dul.socket.sent == [b"queued"]


def _mpps_server(assocs: list[Any]) -> Any:
    def created(event: Any) -> tuple[int, Any]:
        assocs.append(event.assoc)
        return 0x0000, None

    def updated(event: Any) -> tuple[int, Any]:
        return 0x0000, None

    scp = AE(ae_title="MPPSTEST")
    scp.add_supported_context(MPPS)
    return scp.start_server(("127.0.0.1", 0), block=False, evt_handlers=[
        (evt.EVT_N_CREATE, created), (evt.EVT_N_SET, updated)])


def test_mpps_responses_over_a_real_association_skip_the_dul_thread() -> None:
    assocs: list[Any] = []
    server = _mpps_server(assocs)
    try:
        scu = AE(ae_title="STOCKSCU")
        scu.add_requested_context(MPPS)
        scu.acse_timeout = scu.dimse_timeout = scu.network_timeout = 20
        assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="MPPSTEST")
        assert assoc.is_established
        try:
            for n in range(5):
                uid = generate_uid()
                ds = Dataset()
                ds.PerformedProcedureStepStatus = "IN PROGRESS"
                status, _ = assoc.send_n_create(ds, MPPS, uid)
                assert status.Status == 0x0000
                done = Dataset()
                done.PerformedProcedureStepStatus = "COMPLETED"
                status, _ = assoc.send_n_set(done, MPPS, uid)
                assert status.Status == 0x0000, n
        finally:
            assoc.release()
        state = writes.writes_of(assocs[0].dul)
        assert state.direct == 10 and state.queued == 0
    finally:
        server.shutdown()


# -- reads -------------------------------------------------------------------------------
class _CountingSocket(socket.socket):
    reads = 0

    def recv(self, size: int, flags: int = 0) -> bytes:
        self.reads += 1
        return super().recv(size, flags)


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock


@pytest.fixture()
def pair() -> Iterator[tuple[_CountingSocket, socket.socket]]:
    a, b = socket.socketpair()
    counting = _CountingSocket(fileno=a.detach())
    yield counting, b
    counting.close()
    b.close()


def test_two_pdus_in_one_segment_take_one_read(
        pair: tuple[_CountingSocket, socket.socket]) -> None:
    sock, peer = pair
    first, second = b"\x04\x00" + b"\x00\x00\x00\x03abc", b"\x04\x00" + b"\x00\x00\x00\x02de"
    peer.sendall(first + second)
    transport = _Reader(sock)
    assert reads.read(transport, 6) == first[:6]
    assert reads.read(transport, 3) == b"abc"
    assert reads.buffered(transport) == bytearray(second)
    assert reads.read(transport, 6) == second[:6] and reads.read(transport, 2) == b"de"
    assert sock.reads == 1


def test_a_pdu_written_a_byte_at_a_time_is_read_whole(
        pair: tuple[_CountingSocket, socket.socket]) -> None:
    sock, peer = pair
    body = bytes(range(256)) * 8

    def trickle() -> None:
        for byte in body:
            peer.send(bytes([byte]))

    writer = threading.Thread(target=trickle)
    writer.start()
    assert reads.read(_Reader(sock), len(body)) == bytearray(body)
    writer.join(10)


def test_a_closed_peer_gives_what_came(pair: tuple[_CountingSocket, socket.socket]) -> None:
    sock, peer = pair
    peer.sendall(b"\x04\x00\x00")
    peer.close()
    assert reads.read(_Reader(sock), 6) == bytearray(b"\x04\x00\x00")


# -- decode ------------------------------------------------------------------------------
def _request_pdata(primitive: Any, one_pdu: bool) -> list[P_DATA]:
    message = (messages.N_CREATE_RQ() if isinstance(primitive, N_CREATE)
               else messages.N_SET_RQ() if isinstance(primitive, N_SET)
               else messages.C_ECHO_RQ())
    message.primitive_to_message(primitive)
    pdatas = list(message.encode_msg(1, 16382))
    if one_pdu and len(pdatas) > 1:
        joined = P_DATA()
        joined.presentation_data_value_list = [
            list(item) for p in pdatas for item in p.presentation_data_value_list]
        pdatas = [joined]
    received = []
    for sent in pdatas:  # as the DUL thread reads them off the wire
        pdu = P_DATA_TF()
        pdu.decode(P_DATA_TF(sent).encode())
        received.append(pdu.to_primitive())
    return received


def _decoded(pdatas: list[P_DATA], fast: bool) -> Any:
    decode = encoded._decode_msg if fast else encoded._stock_decode_msg
    to_primitive = encoded._message_to_primitive if fast else encoded._stock_to_primitive
    message = messages.DIMSEMessage()
    done = [decode(message, p) for p in pdatas]
    assert done[-1] and not any(done[:-1])
    return type(message), to_primitive(message)


def _n_create() -> N_CREATE:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "CT"
    primitive = N_CREATE()
    primitive.MessageID = 7
    primitive.AffectedSOPClassUID = MPPS
    primitive.AffectedSOPInstanceUID = generate_uid()
    primitive.AttributeList = BytesIO(encode(ds, True, True))
    return primitive


def _n_set() -> N_SET:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "COMPLETED"
    primitive = N_SET()
    primitive.MessageID = 65535
    primitive.RequestedSOPClassUID = MPPS
    primitive.RequestedSOPInstanceUID = generate_uid()
    primitive.ModificationList = BytesIO(encode(ds, True, True))
    return primitive


FIELDS = ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID",
          "RequestedSOPClassUID", "RequestedSOPInstanceUID")


@pytest.mark.parametrize("make", [_n_create, _n_set])
@pytest.mark.parametrize("one_pdu", [False, True])
def test_a_cut_command_set_makes_the_primitive_pynetdicom_makes(make: Any,
                                                                 one_pdu: bool) -> None:
    pdatas = _request_pdata(make(), one_pdu)
    stock_class, stock = _decoded(pdatas, fast=False)
    fast_class, fast = _decoded(pdatas, fast=True)
    assert fast_class is stock_class and type(fast) is type(stock)
    for field in FIELDS:
        if hasattr(stock, field):
            assert getattr(fast, field) == getattr(stock, field), field
    dataset = "AttributeList" if isinstance(stock, N_CREATE) else "ModificationList"
    assert getattr(fast, dataset).getvalue() == getattr(stock, dataset).getvalue()


def test_other_requests_are_decoded_the_stock_way() -> None:
    echo = C_ECHO()
    echo.MessageID = 3
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    pdatas = _request_pdata(echo, one_pdu=False)
    message = messages.DIMSEMessage()
    assert encoded._decode_msg(message, pdatas[0])
    assert type(message) is messages.C_ECHO_RQ
    assert message.command_set.MessageID == 3


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_an_odd_sop_class_uid_is_kept_as_pynetdicom_keeps_it() -> None:
    pdatas = _request_pdata(_n_create(), one_pdu=False)
    context_id, command = pdatas[0].presentation_data_value_list[0]
    good = str(MPPS).encode()
    odd = good[:-1] + b"x"  # pynetdicom warns about it and keeps it
    pdatas[0].presentation_data_value_list[0] = (context_id, command.replace(good, odd))
    _, stock = _decoded(pdatas, fast=False)
    _, fast = _decoded(pdatas, fast=True)
    assert fast.AffectedSOPClassUID == stock.AffectedSOPClassUID == odd.decode()
