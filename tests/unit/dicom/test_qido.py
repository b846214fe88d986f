"""QIDO-style parameters as the UPS C-FIND identifier (broker.dicom.qido)."""

from __future__ import annotations

import pytest

from broker.dicom.qido import BadParameter, identifier
from broker.dicom.ups_scp import parse_ups_identifier


def test_keywords_tags_sequence_paths_and_return_keys() -> None:
    ds = identifier([("PatientID", "P1"), ("00741000", "SCHEDULED"),
                     ("ScheduledStationNameCodeSequence.CodeValue", "CT*"),
                     ("0040A370.00080050", "A1"),
                     ("SOPInstanceUID", "1.2.3, 1.2.4")],
                    ["PatientName", "ReferencedRequestSequence", "PatientID"])
    assert ds.PatientID == "P1" and ds.ProcedureStepState == "SCHEDULED"
    assert ds.ScheduledStationNameCodeSequence[0].CodeValue == "CT*"
    assert ds.ReferencedRequestSequence[0].AccessionNumber == "A1"
    assert list(ds.SOPInstanceUID) == ["1.2.3", "1.2.4"]
    assert ds.PatientName == "" or ds.PatientName is None
    parsed = parse_ups_identifier(ds)
    kinds = {m.keyword: m.kind for m in parsed.query.matches}
    assert kinds == {"PatientID": "single", "ScheduledProcedureStepStatus": "list",
                     "ScheduledStationAETitle": "wildcard", "AccessionNumber": "single",
                     "SOPInstanceUID": "list"}
    assert {k.keyword for k in parsed.keys} >= {"PatientName", "ReferencedRequestSequence"}


@pytest.mark.parametrize(("matches", "words"), [
    ([("NoSuchThing", "1")], "neither a DICOM keyword"),
    ([("7FE10010", "1")], "not an attribute"),
    ([("PatientID.CodeValue", "1")], "not a sequence"),
    ([("ReferencedRequestSequence", "A1")], "is a sequence"),
    ([("PatientID", "1"), ("PatientID", "2")], "more than once"),
    ([("Rows", "many")], "not a number"),
    ([("NumberOfCopies", "many")], "not a valid IS"),
])
def test_what_names_no_attribute_is_refused(matches: list[tuple[str, str]],
                                            words: str) -> None:
    with pytest.raises(BadParameter, match=words):
        identifier(matches)
