"""The DIMSE failure type and attempt(): the status dataset each gives the peer."""

from __future__ import annotations

from broker.dicom.status import (
    MISSING_ATTRIBUTE,
    MPPS_MAY_NO_LONGER_BE_UPDATED,
    PROCESSING_FAILURE,
    DimseFailure,
    attempt,
)


def test_failure_dataset_cuts_the_comment_and_keeps_the_error_id() -> None:
    failure = DimseFailure(PROCESSING_FAILURE, "x" * 80, error_id=MPPS_MAY_NO_LONGER_BE_UPDATED)
    ds = failure.dataset()
    assert ds.Status == 0x0110 and ds.ErrorComment == "x" * 64 and ds.ErrorID == 0xA710
    assert str(failure) == "x" * 80 and failure.comment == "x" * 80


def test_failure_without_error_id_has_none() -> None:
    assert "ErrorID" not in DimseFailure(MISSING_ATTRIBUTE, "Modality is missing").dataset()


def test_attempt_keeps_a_raised_failure() -> None:
    with attempt() as outcome:
        raise DimseFailure(MISSING_ATTRIBUTE, "Modality is missing")
    ds = outcome.dataset()
    assert ds is not None and ds.Status == 0x0120 and ds.ErrorComment == "Modality is missing"


def test_attempt_turns_any_other_exception_into_its_status() -> None:
    with attempt(PROCESSING_FAILURE, "dataset cannot be read") as outcome:
        raise ValueError("bad tag")
    ds = outcome.dataset()
    assert ds is not None and ds.Status == 0x0110
    assert ds.ErrorComment == "dataset cannot be read: bad tag"


def test_attempt_that_succeeds_answers_nothing() -> None:
    with attempt() as outcome:
        pass
    assert outcome.failure is None and outcome.dataset() is None
