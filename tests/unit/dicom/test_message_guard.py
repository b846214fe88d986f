"""The DIMSE message bound counts the fragments of each message as they arrive, and the
pynetdicom code it and the DICOM admission rely on has not changed under them."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterator
from io import BytesIO
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_FIND_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]
from pynetdicom.transport import AddressInformation, RequestHandler

from broker.dicom.acceptor import NoDelayServer
from broker.dicom.pynetdicom_patches import message_bound

LIMIT = 2000

#: what the guard (receive_primitive, decode_msg) and admission (the request handler creating
#: and starting the association, run_reactor setting requestor.primitive on an A-ASSOCIATE-RQ)
#: were written against, pynetdicom 3.0.4; a change means reading them again
PATCHED: dict[str, tuple[Callable[..., Any], str]] = {
    "DIMSEServiceProvider.receive_primitive": (message_bound._stock_receive_primitive,
                                               "5f99c86b14a15cef"),
    "DIMSEMessage.decode_msg": (DIMSEMessage.decode_msg, "f51c777e841a76be"),
    "RequestHandler.handle": (RequestHandler.handle, "034823fb4df3a874"),
    "RequestHandler._create_association": (RequestHandler._create_association,
                                           "05c8d12b79863cdb"),
    "Association.run_reactor": (Association.run_reactor, "ed8bbbe3b3d6ddae"),
}


@pytest.mark.parametrize("name", sorted(PATCHED))
def test_the_pynetdicom_code_relied_on_is_unchanged(name: str) -> None:
    function, digest = PATCHED[name]
    source = inspect.getsource(function)
    assert hashlib.sha256(source.encode()).hexdigest()[:16] == digest, (
        f"pynetdicom's {name} changed: check broker/dicom/pynetdicom_patches/message_bound.py and "
        "broker/dicom/admission.py against it, then update the digest")


@pytest.fixture
def association() -> Iterator[Association]:
    """An acceptor (never started) with a small process-wide bound."""
    message_bound.install(LIMIT)
    try:
        assoc = Association(AE(), "acceptor")
        assoc.requestor.address_info = AddressInformation("127.0.0.9", 5104)
        yield assoc
    finally:
        message_bound.install(message_bound.DEFAULT_MAX_MESSAGE_BYTES)


def find_request(message_id: int, name_length: int) -> list[P_DATA]:
    """A C-FIND-RQ whose identifier holds Patient Comments of ``name_length`` characters."""
    primitive = C_FIND()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = ModalityWorklistInformationFind
    primitive.Priority = 0
    identifier = Dataset()
    identifier.PatientComments = "X" * name_length
    primitive.Identifier = BytesIO(encode(identifier, True, True))
    message = C_FIND_RQ()
    message.primitive_to_message(primitive)
    return list(message.encode_msg(1, 16382))


def fragment(size: int) -> P_DATA:
    """A non-final data set fragment of ``size`` bytes (control header included)."""
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[1, b"\x00" + bytes(size - 1)]]
    return primitive


def events(assoc: Association) -> list[str]:
    return list(assoc.dul.event_queue.queue)


def test_messages_are_bounded_one_by_one(association: Association) -> None:
    for message_id in (1, 2, 3):  # 3 × 1,200 bytes on one association: each under the bound
        for primitive in find_request(message_id, 1200):
            association.dimse.receive_primitive(primitive)
    assert association.dimse.msg_queue.qsize() == 3
    assert events(association) == []


def test_fragments_past_the_bound_abort_once_and_are_dropped(association: Association) -> None:
    command = find_request(7, 10)[0]  # the command set only: the data set never ends
    association.dimse.receive_primitive(command)
    for _ in range(3):
        association.dimse.receive_primitive(fragment(600))
    assert events(association) == []
    association.dimse.receive_primitive(fragment(600))  # 2,400 + command bytes > 2,000
    assert events(association) == [message_bound.INVALID_PDU_EVENT]
    assert association.dimse.message is None  # what was read of it is freed
    for _ in range(3):
        association.dimse.receive_primitive(fragment(600))
    assert events(association) == [message_bound.INVALID_PDU_EVENT]
    assert association.dimse.msg_queue.qsize() == 0


def test_the_bound_of_its_server_applies(association: Association) -> None:
    ae = AE()
    ae.add_supported_context(ModalityWorklistInformationFind)
    server = ae.make_server(("127.0.0.1", 0), server_class=NoDelayServer)
    assert isinstance(server, NoDelayServer)
    told: list[tuple[str, str, int, int]] = []
    server.max_message_bytes = 10_000
    server.on_message_too_large = lambda *args: told.append(args)
    try:
        association._server = server
        for primitive in find_request(1, 5000):  # over the process's 2,000, under 10,000
            association.dimse.receive_primitive(primitive)
        assert association.dimse.msg_queue.qsize() == 1
        association.dimse.receive_primitive(find_request(2, 10)[0])
        for _ in range(20):
            association.dimse.receive_primitive(fragment(600))
        assert events(association) == [message_bound.INVALID_PDU_EVENT]
        assert len(told) == 1
        peer, _, received, limit = told[0]
        assert (peer, limit) == ("127.0.0.9:5104", 10_000) and received > 10_000
    finally:
        server.server_close()
