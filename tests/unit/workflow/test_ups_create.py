"""The N-CREATE rules of UPS Push: what must be there, what is compared, what is left out."""

from __future__ import annotations

import pytest

from broker.workflow.ups import UpsError
from broker.workflow.ups_create import (
    check_create,
    created_comment,
    dropped,
    modifications,
)

GOOD = {"ProcedureStepState": "SCHEDULED", "ScheduledProcedureStepPriority": "LOW",
        "ProcedureStepLabel": "x", "ScheduledProcedureStepStartDateTime": "20261203100000",
        "InputReadinessState": "INCOMPLETE", "PatientID": "P1"}


def test_a_complete_request_passes() -> None:
    check_create(GOOD)


@pytest.mark.parametrize(("change", "status"), [
    ({"ProcedureStepState": "IN PROGRESS"}, 0xC309),
    ({"InputReadinessState": None}, 0x0120),
    ({"ProcedureStepLabel": ""}, 0x0121),
    ({"ScheduledProcedureStepPriority": "ROUTINE"}, 0x0106),
    ({"InputReadinessState": "DONE"}, 0x0106),
    ({"PatientID": ""}, 0x0120),
])
def test_refusals(change: dict[str, str | None], status: int) -> None:
    attrs = {**GOOD, **change}
    attrs = {k: v for k, v in attrs.items() if v is not None}
    with pytest.raises(UpsError) as refused:
        check_create(attrs)
    assert refused.value.status == status


def test_modifications_compare_what_was_given_only() -> None:
    given = {"PatientName": "A^B", "ReferencedRequestSequence": [{"AccessionNumber": "1"}],
             "ScheduledStationNameCodeSequence": [{"CodeValue": "CT1", "CodeMeaning": "x"}],
             "WorklistLabel": "", "TransactionUID": "1.2"}
    stored = {"PatientName": "A^B", "ReferencedRequestSequence": [
        {"AccessionNumber": "1", "StudyInstanceUID": "1.2.3"}],
        "ScheduledStationNameCodeSequence": [{"CodeValue": "CT1", "CodeMeaning": "y"}]}
    assert modifications(given, stored) == ["ScheduledStationNameCodeSequence"]
    assert dropped(given) == ["TransactionUID"]
    assert created_comment([], []) == (0, "")
    assert created_comment(["A"], ["TransactionUID"]) == (
        0xB300, "modified A; left out TransactionUID")
