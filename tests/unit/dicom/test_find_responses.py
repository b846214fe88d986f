"""Kept C-FIND responses: the same kept query meeting the same stored row answers with the
same encoded identifier; a changed row (another fingerprint), another query or a query
that is not kept is encoded anew, and what is kept decodes to what a fresh encoding gives."""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

from broker.dicom.find_responses import find_response
from broker.dicom.pynetdicom_patches.encoded import PreEncoded
from broker.dicom.worklist_matching import RESPONSES_KEPT, Kept, WorklistMatching
from broker.store.worklist_query import WorklistRow

IMPLICIT = "1.2.840.10008.1.2"


def stored(name: str = "DOE^JANE", status: str = "SCHEDULED", step_id: int = 1
           ) -> tuple[Any, ...]:
    """A worklist row's stored values, as the worklist statement selects them."""
    return ("P1", "HOSP", json.dumps({"PatientName": name}), "1.2.3",
            json.dumps({"AccessionNumber": "A1"}), status,
            json.dumps({"ScheduledStationAETitle": "CT01", "Modality": "CT"}), step_id, "",
            0.0, None)


def row(values: tuple[Any, ...]) -> WorklistRow:
    pid, issuer, patient, uid, procedure, status, step, step_id, _, created, _ = values
    return WorklistRow({**json.loads(patient), "PatientID": pid, "IssuerOfPatientID": issuer},
                       {**json.loads(procedure), "StudyInstanceUID": uid},
                       {**json.loads(step), "ScheduledProcedureStepStatus": status},
                       step_id, "", created, None, values)


def kept_query(matching: WorklistMatching) -> Any:
    ds = Dataset()
    ds.PatientName = ""
    ds.AccessionNumber = ""
    item = Dataset()
    item.ScheduledStationAETitle = "CT01"
    item.ScheduledProcedureStepStatus = ""
    ds.ScheduledProcedureStepSequence = [item]
    data = encode(ds, True, True)
    assert data is not None
    return matching.parse_encoded(data, IMPLICIT, "CT01", lambda: ds)


def readable(answer: Dataset) -> Dataset:
    assert isinstance(answer, PreEncoded)
    data = answer.encoded_for(True)
    assert data is not None
    return decode(BytesIO(data), True, True)


def test_the_same_row_answers_with_the_kept_response() -> None:
    matching = WorklistMatching()
    parsed = kept_query(matching)
    assert parsed.serial
    first = find_response(matching.responses, row(stored()), parsed, None, "ISO_IR 192", True)
    again = find_response(matching.responses, row(stored()), parsed, None, "ISO_IR 192", True)
    assert again is first and len(matching.responses) == 1
    assert str(readable(first).PatientName) == "DOE^JANE"


def test_a_changed_row_is_encoded_anew() -> None:
    matching = WorklistMatching()
    parsed = kept_query(matching)
    before = find_response(matching.responses, row(stored()), parsed, None, "ISO_IR 192", True)
    renamed = find_response(matching.responses, row(stored("ROE^JOHN")), parsed, None,
                            "ISO_IR 192", True)
    started = find_response(matching.responses, row(stored(status="STARTED")), parsed, None,
                            "ISO_IR 192", True)
    assert str(readable(before).PatientName) == "DOE^JANE"
    assert str(readable(renamed).PatientName) == "ROE^JOHN"
    sps = readable(started).ScheduledProcedureStepSequence[0]
    assert sps.ScheduledProcedureStepStatus == "STARTED"


def test_kept_responses_equal_fresh_ones() -> None:
    matching = WorklistMatching()
    parsed = kept_query(matching)
    kept = find_response(matching.responses, row(stored()), parsed, None, "ISO_IR 192", True)
    parsed.serial = 0  # the same query, not kept: encoded each time
    fresh = find_response(matching.responses, row(stored()), parsed, None, "ISO_IR 192", True)
    assert fresh is not kept and len(matching.responses) == 1
    assert readable(fresh) == readable(kept)


def test_without_the_fast_path_nothing_is_kept() -> None:
    matching = WorklistMatching()
    parsed = kept_query(matching)
    answer = find_response(matching.responses, row(stored()), parsed, None, "ISO_IR 192", None)
    assert not isinstance(answer, PreEncoded) and len(matching.responses) == 0
    assert str(answer.PatientName) == "DOE^JANE"


def test_at_most_responses_kept() -> None:
    kept: Kept[int, int] = Kept(RESPONSES_KEPT)
    for n in range(RESPONSES_KEPT + 5):
        kept.put(n, n)
    assert len(kept) == RESPONSES_KEPT and kept.get(0) is None and kept.get(5) == 5
