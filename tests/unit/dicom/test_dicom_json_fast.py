"""UPS-RS answers built by the worklist's encoder and broker.dicom.fastjson equal pydicom's
``to_json_dict`` of the same attributes (names in several groups, lists, numbers, sequences)."""

from __future__ import annotations

from broker.dicom.dicom_json import to_json
from broker.dicom.mwl import SPECIFIC_CHARACTER_SET, nodes_of, to_pydicom
from broker.dicom.workitem import workitem_attrs
from broker.model.ups import UpsState


def test_fast_dicom_json_equals_pydicoms() -> None:
    attrs = workitem_attrs(
        "2.25.1", UpsState.IN_PROGRESS,
        {"PatientName": "MÜLLER^JÖRG=山田^太郎", "PatientID": "P1", "PatientSex": "F",
         "PatientBirthDate": "19700101"},
        {"StudyInstanceUID": "1.2.3", "AccessionNumber": "A1",
         "RequestedProcedureDescription": "CT chest", "RequestedProcedurePriority": "STAT"},
        {"ScheduledProcedureStepStartDate": "20261203", "ScheduledProcedureStepStartTime":
         "0930", "ScheduledStationAETitle": ["CT01", "CT02"], "Modality": "CT",
         "ScheduledProcedureStepID": "S1"},
        {"ProcedureStepProgressInformationSequence": [{"ProcedureStepProgress": "50"}]})
    ds = to_pydicom(nodes_of([], attrs), "ISO_IR 192")
    del ds[SPECIFIC_CHARACTER_SET]
    assert to_json(attrs, "ISO_IR 192") == ds.to_json_dict()
