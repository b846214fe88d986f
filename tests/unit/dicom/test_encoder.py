"""The worklist response encoder and the fast C-FIND response command produce exactly the
bytes pydicom/pynetdicom would."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import decode
from pynetdicom.dsutils import encode as pydicom_encode

from broker.dicom.client import build_query, query_keys
from broker.dicom.encoder import encode
from broker.dicom.mwl import parse_identifier, response_nodes, to_pydicom
from broker.dicom.pynetdicom_patches.encoded import find_response_command
from broker.dicom.worklist_matching import latin1_name
from broker.store.worklist_query import WorklistRow

ROW = WorklistRow(
    {"PatientID": "P1", "IssuerOfPatientID": "HOSP", "PatientName": "WANG^XIAOMING=王^小明",
     "PatientBirthDate": "19700101", "PregnancyStatus": "3", "MedicalAlerts": ["A", "B C"],
     "PatientWeight": "65.5"},
    {"StudyInstanceUID": "1.2.840.5", "AccessionNumber": "ACC1",
     "RequestedProcedureCodeSequence": [
         {"CodeValue": "P1", "CodingSchemeDesignator": "L", "CodeMeaning": "Proc één"}]},
    {"ScheduledProcedureStepID": "S1", "Modality": "CT", "ScheduledStationAETitle": ["CT01", "CT2"],
     "ScheduledProcedureStepStartDate": "20261122", "ScheduledProcedureStepStartTime": "0800",
     "ScheduledProcedureStepStatus": "SCHEDULED",
     "ScheduledProtocolCodeSequence": [{"CodeValue": "X", "CodingSchemeDesignator": "L"}]})
EXTRA = ["PregnancyStatus=", "MedicalAlerts=", "PatientWeight=", "ReferencedStudySequence=",
         "RequestedProcedureCodeSequence=", "ScheduledProtocolCodeSequence=",
         "AdmissionID=", "ScheduledStationName="]


@pytest.mark.parametrize("charset", ["ISO_IR 192", "GB18030", "ISO_IR 100"])
@pytest.mark.parametrize("implicit", [True, False])
def test_bytes_equal_pydicom_encoding(charset: str, implicit: bool) -> None:
    keys = parse_identifier(build_query(query_keys(EXTRA))).keys
    name = latin1_name if charset == "ISO_IR 100" else None
    nodes = response_nodes(ROW, keys, name)
    ours = encode(nodes, charset, implicit)
    theirs = pydicom_encode(to_pydicom(nodes, charset), implicit, True)
    assert ours == theirs
    back = decode(BytesIO(ours), implicit, True)
    assert back.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == ["CT01", "CT2"]
    assert back.PregnancyStatus == 3


def test_sequence_returned_whole_when_its_query_item_is_empty() -> None:
    keys = parse_identifier(build_query(query_keys(["RequestedProcedureCodeSequence="]))).keys
    ds = decode(BytesIO(encode(response_nodes(ROW, keys), "ISO_IR 192", True)), True, True)
    item = ds.RequestedProcedureCodeSequence[0]
    assert (item.CodeValue, item.CodeMeaning) == ("P1", "Proc één")


@pytest.mark.parametrize("status,has_dataset", [(0xFF00, True), (0xFF01, True),
                                                (0x0000, False), (0xFE00, False)])
def test_fast_response_command_equals_pynetdicom(status: int, has_dataset: bool) -> None:
    from pynetdicom.dimse_messages import C_FIND_RSP

    primitive = C_FIND()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.31"
    primitive.Status = status
    if has_dataset:
        primitive.Identifier = BytesIO(b"\x08\x00\x05\x00\x00\x00\x00\x00")
    message = C_FIND_RSP()
    message.primitive_to_message(primitive)
    command = message.command_set
    expected = pydicom_encode(command, True, True)
    assert find_response_command("1.2.840.10008.5.1.4.31", 7, status, has_dataset) == expected


@pytest.mark.parametrize("kind", ["N-CREATE", "N-SET"])
def test_n_response_command_is_pynetdicom_s(kind: str) -> None:
    from pynetdicom.dimse_messages import N_CREATE_RSP, N_SET_RSP
    from pynetdicom.dimse_primitives import N_CREATE, N_SET

    from broker.dicom.pynetdicom_patches.encoded import N_RESPONSES, n_response_command

    primitive = N_CREATE() if kind == "N-CREATE" else N_SET()
    primitive.MessageIDBeingRespondedTo = 9
    primitive.AffectedSOPClassUID = "1.2.840.10008.3.1.2.3.3"
    primitive.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.123"
    primitive.Status = 0x0000
    message = N_CREATE_RSP() if kind == "N-CREATE" else N_SET_RSP()
    message.primitive_to_message(primitive)
    expected = pydicom_encode(message.command_set, True, True)
    ours = n_response_command(N_RESPONSES[type(primitive)], "1.2.840.10008.3.1.2.3.3", 9, 0,
                              "1.2.826.0.1.3680043.8.498.123")
    assert ours == expected


@pytest.mark.parametrize("kind", ["N-CREATE", "N-SET"])
def test_n_request_primitive_matches_pynetdicom_s(kind: str) -> None:
    from pynetdicom.dimse_messages import N_CREATE_RQ, N_SET_RQ
    from pynetdicom.dimse_primitives import N_CREATE, N_SET

    from broker.dicom.pynetdicom_patches import encoded

    primitive = N_CREATE() if kind == "N-CREATE" else N_SET()
    primitive.MessageID = 513
    if kind == "N-CREATE":
        primitive.AffectedSOPClassUID = "1.2.840.10008.3.1.2.3.3"
        primitive.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.7"
    else:
        primitive.RequestedSOPClassUID = "1.2.840.10008.3.1.2.3.3"
        primitive.RequestedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.7"
    sent = N_CREATE_RQ() if kind == "N-CREATE" else N_SET_RQ()
    sent.primitive_to_message(primitive)
    command = pydicom_encode(sent.command_set, True, True)

    def received() -> Any:
        message = N_CREATE_RQ() if kind == "N-CREATE" else N_SET_RQ()
        message.command_set = decode(BytesIO(command), True, True)
        message.data_set = BytesIO(b"\x08\x00\x05\x00\x00\x00\x00\x00")
        message.context_id = 3
        return message

    stock = encoded._stock_to_primitive(received())
    fast = encoded._message_to_primitive(received())
    assert type(fast) is type(stock)
    for name in ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID",
                 "RequestedSOPClassUID", "RequestedSOPInstanceUID", "_context_id"):
        assert getattr(fast, name, None) == getattr(stock, name, None), name
    attribute = "AttributeList" if kind == "N-CREATE" else "ModificationList"
    assert getattr(fast, attribute).getvalue() == getattr(stock, attribute).getvalue()
