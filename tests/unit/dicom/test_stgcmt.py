"""Reading storage commitment reports (N-EVENT-REPORT) and Instance Availability Notifications
(N-CREATE), building the N-ACTION request, and checking the mappings' completion rule."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from broker.dicom import ian
from broker.dicom.status import DimseFailure
from broker.dicom.stgcmt import (
    ALL_COMMITTED,
    SOME_FAILED,
    action_request,
    parse_report,
)
from broker.mapping.schema import MappingLoadError, load_mappings

# malformed values are what these tests feed on purpose
pytestmark = pytest.mark.filterwarnings("ignore:(Invalid value|The value length):UserWarning")

MAPPINGS = Path(__file__).resolve().parents[3] / "mappings"
CT = "1.2.840.10008.5.1.4.1.1.2"
TRANSACTION = "1.2.826.0.1.3680043.8.498.77"


def ref(uid: str, reason: int | None = None, sop_class: str = CT) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = uid
    if reason is not None:
        item.FailureReason = reason
    return item


def report_info(committed: list[Dataset] | None = None, failed: list[Dataset] | None = None,
                transaction: str | None = TRANSACTION) -> Dataset:
    ds = Dataset()
    if transaction is not None:
        ds.TransactionUID = transaction
    if committed is not None:
        ds.ReferencedSOPSequence = committed
    if failed is not None:
        ds.FailedSOPSequence = failed
    return ds


# -- N-ACTION request ---------------------------------------------------------------------------


def test_action_request_lists_every_instance_with_its_class() -> None:
    ds = action_request(TRANSACTION, [(CT, "1.2.3.1"), ("1.2.840.10008.5.1.4.1.1.7", "1.2.3.2")])
    assert ds.TransactionUID == TRANSACTION
    assert [(str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID))
            for i in ds.ReferencedSOPSequence] == [(CT, "1.2.3.1"),
                                                   ("1.2.840.10008.5.1.4.1.1.7", "1.2.3.2")]
    assert "FailedSOPSequence" not in ds


def test_action_request_survives_encoding() -> None:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset
    from pydicom.filewriter import write_dataset

    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, action_request(TRANSACTION, [(CT, "1.2.3.1")]))
    decoded = read_dataset(DicomBytesIO(buffer.getvalue()), True, True)
    assert decoded.TransactionUID == TRANSACTION
    assert decoded.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == "1.2.3.1"


# -- N-EVENT-REPORT -----------------------------------------------------------------------------


def test_report_all_committed() -> None:
    report = parse_report(ALL_COMMITTED, report_info([ref("1.2.3.1"), ref("1.2.3.2")]))
    assert report.transaction_uid == TRANSACTION
    assert report.committed == ["1.2.3.1", "1.2.3.2"]
    assert report.failed == {}


def test_report_some_failed_keeps_each_failure_reason() -> None:
    report = parse_report(SOME_FAILED, report_info(
        [ref("1.2.3.1")], [ref("1.2.3.2", 0x0112), ref("1.2.3.3", 0x0122)]))
    assert report.committed == ["1.2.3.1"]
    assert report.failed == {"1.2.3.2": 0x0112, "1.2.3.3": 0x0122}


def test_report_failure_without_reason_counts_as_processing_failure() -> None:
    report = parse_report(SOME_FAILED, report_info(failed=[ref("1.2.3.2")]))
    assert report.committed == []
    assert report.failed == {"1.2.3.2": 0x0110}


@pytest.mark.parametrize("event_type", [0, 3, 4, 0xFFFF])
def test_report_unknown_event_type_is_0113(event_type: int) -> None:
    with pytest.raises(DimseFailure) as info:
        parse_report(event_type, report_info([ref("1.2.3.1")]))
    assert info.value.status == 0x0113
    assert str(event_type) in info.value.comment


@pytest.mark.parametrize("transaction", [None, "", "   "])
def test_report_without_transaction_uid_is_0115(transaction: str | None) -> None:
    with pytest.raises(DimseFailure) as info:
        parse_report(ALL_COMMITTED, report_info([ref("1.2.3.1")], transaction=transaction))
    assert info.value.status == 0x0115
    assert "TransactionUID" in info.value.comment


def test_report_without_event_information_is_0115() -> None:
    with pytest.raises(DimseFailure) as info:
        parse_report(ALL_COMMITTED, None)
    assert info.value.status == 0x0115


@pytest.mark.parametrize(("event_type", "committed", "failed", "text"), [
    (ALL_COMMITTED, [ref("1.2.3.1")], [ref("1.2.3.2", 0x0112)], "Event Type 1"),
    (SOME_FAILED, [ref("1.2.3.1")], None, "without a FailedSOPSequence"),
    (SOME_FAILED, [ref("1.2.3.1")], [], "without a FailedSOPSequence"),
])
def test_report_event_type_must_match_its_sequences(event_type: int, committed: Any,
                                                    failed: Any, text: str) -> None:
    with pytest.raises(DimseFailure) as info:
        parse_report(event_type, report_info(committed, failed))
    assert info.value.status == 0x0115
    assert text in info.value.comment


@pytest.mark.parametrize(("uid", "text"), [
    ("", "missing"), ("1.2.abc", "not a UID"), ("1..2", "not a UID"), ("01.2", "not a UID"),
    ("1." + "2" * 70, "not a UID"),
])
def test_report_malformed_instance_uid_names_the_item(uid: str, text: str) -> None:
    with pytest.raises(DimseFailure) as committed:
        parse_report(ALL_COMMITTED, report_info([ref("1.2.3.1"), ref(uid)]))
    assert committed.value.status == 0x0115
    assert "ReferencedSOPSequence item 2" in committed.value.comment
    assert text in committed.value.comment
    with pytest.raises(DimseFailure) as failed:
        parse_report(SOME_FAILED, report_info([], [ref(uid, 0x0112)]))
    assert failed.value.status == 0x0115
    assert "FailedSOPSequence item 1" in failed.value.comment


def test_report_item_without_instance_uid_is_refused() -> None:
    item = Dataset()
    item.ReferencedSOPClassUID = CT
    with pytest.raises(DimseFailure) as info:
        parse_report(ALL_COMMITTED, report_info([item]))
    assert info.value.status == 0x0115
    assert "(0008,1155) is missing" in info.value.comment


# -- Instance Availability Notification ---------------------------------------------------------

MPPS_UID = "1.2.826.0.1.3680043.8.498.500"
STUDY = "1.2.826.0.1.3680043.8.498.2"


def notification(instances: int = 2, series: int = 1, availability: str = "ONLINE",
                 mpps: bool = True) -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID = STUDY
    ds.AccessionNumber = "A0000001"
    step = Dataset()
    step.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.3"
    step.ReferencedSOPInstanceUID = MPPS_UID
    step.PerformedWorkitemCodeSequence = []
    ds.ReferencedPerformedProcedureStepSequence = [step] if mpps else []
    ds.ReferencedSeriesSequence = []
    for s in range(1, series + 1):
        item = Dataset()
        item.SeriesInstanceUID = f"1.2.3.{s}"
        item.ReferencedSOPSequence = []
        for i in range(1, instances + 1):
            sop = ref(f"1.2.3.{s}.{i}")
            sop.InstanceAvailability = availability
            sop.RetrieveAETitle = "ARCHIVE"
            item.ReferencedSOPSequence.append(sop)
        ds.ReferencedSeriesSequence.append(item)
    return ds


def first_sop(ds: Dataset, series: int = 0, index: int = 0) -> Dataset:
    item: Dataset = ds.ReferencedSeriesSequence[series].ReferencedSOPSequence[index]
    return item


def refused(ds: Dataset) -> DimseFailure:
    with pytest.raises(DimseFailure) as info:
        ian.parse(ds)
    return info.value


def test_ian_parse_reads_every_instance() -> None:
    parsed = ian.parse(notification(instances=2, series=2))
    assert parsed.study_uid == STUDY
    assert parsed.mpps_uids == [MPPS_UID]
    assert parsed.accession == "A0000001"
    assert [(i.series_uid, i.sop_instance_uid, i.sop_class_uid, i.availability, i.retrieve_ae)
            for i in parsed.instances] == [
        ("1.2.3.1", "1.2.3.1.1", CT, "ONLINE", "ARCHIVE"),
        ("1.2.3.1", "1.2.3.1.2", CT, "ONLINE", "ARCHIVE"),
        ("1.2.3.2", "1.2.3.2.1", CT, "ONLINE", "ARCHIVE"),
        ("1.2.3.2", "1.2.3.2.2", CT, "ONLINE", "ARCHIVE")]


@pytest.mark.parametrize("availability", ian.AVAILABILITY)
def test_ian_every_availability_value(availability: str) -> None:
    assert ian.parse(notification(availability=availability)).instances[0].availability \
        == availability


def test_ian_empty_step_sequence_and_no_retrieve_ae() -> None:
    ds = notification(mpps=False)
    del first_sop(ds).RetrieveAETitle
    del ds.AccessionNumber
    parsed = ian.parse(ds)
    assert parsed.mpps_uids == []
    assert parsed.accession == ""
    assert parsed.instances[0].retrieve_ae == ""


@pytest.mark.parametrize(("keyword", "text"), [
    ("StudyInstanceUID", "StudyInstanceUID is missing"),
    ("ReferencedPerformedProcedureStepSequence",
     "ReferencedPerformedProcedureStepSequence is missing"),
    ("ReferencedSeriesSequence", "ReferencedSeriesSequence is missing"),
])
def test_ian_missing_top_level_attribute_is_0120(keyword: str, text: str) -> None:
    ds = notification()
    delattr(ds, keyword)
    error = refused(ds)
    assert error.status == 0x0120
    assert text in error.comment


@pytest.mark.parametrize(("keyword", "where"), [
    ("InstanceAvailability", "(Referenced Series item 1, Referenced SOP item 2)"),
    ("ReferencedSOPInstanceUID", "(Referenced Series item 1, Referenced SOP item 2)"),
    ("ReferencedSOPClassUID", "(Referenced Series item 1, Referenced SOP item 2)"),
])
def test_ian_missing_instance_attribute_is_0120_with_its_location(keyword: str,
                                                                  where: str) -> None:
    ds = notification()
    delattr(first_sop(ds, 0, 1), keyword)
    error = refused(ds)
    assert error.status == 0x0120
    assert keyword in error.comment and where in error.comment


def test_ian_missing_series_uid_and_sop_sequence_name_the_series() -> None:
    ds = notification(series=2)
    del ds.ReferencedSeriesSequence[1].SeriesInstanceUID
    error = refused(ds)
    assert (error.status, error.comment) == (
        0x0120, "SeriesInstanceUID is missing (Referenced Series item 2)")
    ds = notification(series=2)
    del ds.ReferencedSeriesSequence[1].ReferencedSOPSequence
    error = refused(ds)
    assert (error.status, error.comment) == (
        0x0120, "ReferencedSOPSequence is missing (Referenced Series item 2)")


def test_ian_step_item_without_uid_names_the_item() -> None:
    ds = notification()
    del ds.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID
    error = refused(ds)
    assert error.status == 0x0120
    assert "Referenced Performed Procedure Step item 1" in error.comment


@pytest.mark.parametrize("change", ["study", "availability", "series", "series_items",
                                    "sop_items"])
def test_ian_empty_value_is_0121(change: str) -> None:
    ds = notification()
    if change == "study":
        ds.StudyInstanceUID = ""
    elif change == "availability":
        first_sop(ds).InstanceAvailability = ""
    elif change == "series":
        ds.ReferencedSeriesSequence[0].SeriesInstanceUID = ""
    elif change == "series_items":
        ds.ReferencedSeriesSequence = []
    else:
        ds.ReferencedSeriesSequence[0].ReferencedSOPSequence = []
    error = refused(ds)
    assert error.status == 0x0121
    assert "no value" in error.comment or "no item" in error.comment


@pytest.mark.parametrize("value", ["LOST", "ONLINE2", "ON LINE"])
def test_ian_bad_availability_is_0106_with_its_location(value: str) -> None:
    ds = notification()
    first_sop(ds, 0, 1).InstanceAvailability = value
    error = refused(ds)
    assert error.status == 0x0106
    assert repr(value) in error.comment
    assert "(Referenced Series item 1, Referenced SOP item 2)" in error.comment


def test_ian_lower_case_availability_is_read_as_upper_case() -> None:
    ds = notification()
    first_sop(ds).InstanceAvailability = "nearline"
    assert ian.parse(ds).instances[0].availability == "NEARLINE"


@pytest.mark.parametrize("target", ["study", "mpps", "series", "sop", "class"])
@pytest.mark.parametrize("uid", ["1.2.x", "1.02.3", "1." + "9" * 70])
def test_ian_bad_uid_is_0106(target: str, uid: str) -> None:
    ds = notification()
    if target == "study":
        ds.StudyInstanceUID = uid
    elif target == "mpps":
        ds.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID = uid
    elif target == "series":
        ds.ReferencedSeriesSequence[0].SeriesInstanceUID = uid
    elif target == "sop":
        first_sop(ds).ReferencedSOPInstanceUID = uid
    else:
        first_sop(ds).ReferencedSOPClassUID = uid
    error = refused(ds)
    assert error.status == 0x0106
    assert "is not a UID" in error.comment


# -- the completion rule in the mapping files ---------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, target)
    return target


def edit(folder: Path, old: str, new: str) -> tuple[str, int]:
    """Replace the one ``old`` in outbound.yaml; (file, line of the edit)."""
    path = folder / "outbound.yaml"
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} must occur exactly once"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return str(path), text[:text.index(old)].count("\n") + 1


def load_error(folder: Path, file: str, line: int, *fragments: str) -> None:
    with pytest.raises(MappingLoadError) as info:
        load_mappings(folder)
    prefix = f"{file}:{line}: "
    assert any(e.startswith(prefix) and all(f in e for f in fragments)
               for e in info.value.errors), "\n".join(info.value.errors)


def test_shipped_completion_rule() -> None:
    rule = load_mappings(MAPPINGS).outbound["completion"]
    assert rule.template == "ORU_R01_completion"
    assert rule.require == ("committed", "available")
    assert (rule.timeout, rule.on_timeout) == (600.0, "send_partial")
    assert rule.result_status == {"complete": "F", "partial": "A", "commitment_failed": "X"}


def test_completion_rule_values_are_read(folder: Path) -> None:
    edit(folder, "require: [committed, available]", "require: [available]")
    edit(folder, "timeout: 600", "timeout: 30")
    edit(folder, "    on_timeout: send_partial\n", "    on_timeout: report_problem\n")
    edit(folder, "partial: A,", "partial: P,")
    rule = load_mappings(folder).outbound["completion"]
    assert (rule.require, rule.timeout, rule.on_timeout) == (("available",), 30.0,
                                                             "report_problem")
    assert rule.result_status["partial"] == "P"


def completion_line(folder: Path) -> int:
    text = (folder / "outbound.yaml").read_text(encoding="utf-8")
    return text[:text.index("  completion:")].count("\n") + 1


@pytest.mark.parametrize("value", ["[committed, archived]", "committed", "[stored]"])
def test_bad_require(folder: Path, value: str) -> None:
    file, _ = edit(folder, "require: [committed, available]", f"require: {value}")
    load_error(folder, file, completion_line(folder), "require must be a list of",
               "committed and available")


def test_bad_on_timeout(folder: Path) -> None:
    file, _ = edit(folder, "    on_timeout: send_partial\n", "    on_timeout: resend\n")
    load_error(folder, file, completion_line(folder), "on_timeout must be one of",
               "send_partial, report_problem", "'resend'")


@pytest.mark.parametrize("value", ["-5", "soon", "true"])
def test_bad_timeout(folder: Path, value: str) -> None:
    file, _ = edit(folder, "timeout: 600", f"timeout: {value}")
    load_error(folder, file, completion_line(folder), "timeout must be seconds")


def test_unknown_result_status_state(folder: Path) -> None:
    file, _ = edit(folder, "commitment_failed: X}", "commitment_failed: X, finished: F}")
    load_error(folder, file, completion_line(folder), "unknown result_status state 'finished'",
               "complete, partial, commitment_failed")


def test_unknown_completion_rule_key(folder: Path) -> None:
    file, line = edit(folder, "    on_timeout: send_partial\n",
                      "    on_timeout: send_partial\n    retries: 3\n")
    load_error(folder, file, line + 1, "retries")


def test_unknown_completion_placeholder(folder: Path) -> None:
    file, _ = edit(folder, '5: "{completion.partial}"', '5: "{completion.partal}"')
    text = (folder / "outbound.yaml").read_text(encoding="utf-8")
    line = text[:text.index("  ORU_R01_completion:")].count("\n") + 1
    load_error(folder, file, line, "{completion.partal}", "completion has",
               "available_count")
