"""The FHIR resources of a step's progress: valid R4 (R4B models), stable ids, references
by ServiceRequest id or by identifier; a broken resource is named, not raised."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.config import ConfigError
from broker.config.loading import load_settings
from broker.outbound.fhir_client import diagnostics
from broker.workflow import fhir_build as build

STUDY = "1.2.826.0.1.3680043.8.498.2"
PROCEDURE = {"StudyInstanceUID": STUDY, "AccessionNumber": "A1",
             "PlacerOrderNumberImagingServiceRequest": "PLC1"}
PATIENT = {"PatientID": "P1", "IssuerOfPatientID": "HOSP", "PatientName": "DOE^JANE"}
SUMMARY = {"start": "20261122101500", "end": "", "station": "CT01",
           "instances": [("1.2.3.1", "1.2.840.10008.5.1.4.1.1.2", "1.2.3"),
                         ("1.2.3.2", "1.2.840.10008.5.1.4.1.1.2", "1.2.3")]}


def a_task(status: str = "IN PROGRESS", link: str = "") -> dict[str, object]:
    return build.task(study_uid=STUDY, sps_id="SPS1", status=status, summary=SUMMARY,
                      focus=build.service_request_ref(link, PROCEDURE),
                      subject=build.patient_ref({}, PATIENT), step={}, now=1.8e9)


@pytest.mark.parametrize(("status", "fhir"), [("IN PROGRESS", "in-progress"),
                                              ("COMPLETED", "completed"),
                                              ("DISCONTINUED", "failed")])
def test_tasks_are_valid_and_keep_their_identity(status: str, fhir: str) -> None:
    task = a_task(status)
    assert build.validate(task) == ""
    assert task["status"] == fhir
    assert task["id"] == a_task()["id"] and len(str(task["id"])) <= 64
    assert ("statusReason" in task) == (status == "DISCONTINUED")


def test_references_by_id_or_by_identifier() -> None:
    assert a_task(link="sr-9")["focus"] == {"reference": "ServiceRequest/sr-9"}
    focus = a_task()["focus"]
    assert focus["identifier"]["value"] == "A1"  # type: ignore[index]
    assert focus["identifier"]["type"]["coding"][0]["code"] == "ACSN"  # type: ignore[index]
    assert build.patient_ref({}, {**PATIENT, "IssuerOfPatientID": "urn:oid:1.2.3"})[
        "identifier"] == {"value": "P1", "system": "urn:oid:1.2.3"}
    assert build.patient_ref({"reference": "Patient/x"}, PATIENT) == {
        "reference": "Patient/x"}


def test_imaging_study_is_valid_with_its_series_and_instances() -> None:
    study = build.imaging_study(study_uid=STUDY, status="available", summary=SUMMARY,
                                based_on={"reference": "ServiceRequest/sr-1"},
                                subject={"reference": "Patient/p"}, modality="CT",
                                series_count=1, instance_count=2)
    assert build.validate(study) == ""
    assert (study["numberOfSeries"], study["numberOfInstances"]) == (1, 2)
    assert study["series"][0]["instance"][0]["sopClass"]["code"] == (  # type: ignore[index]
        "urn:oid:1.2.840.10008.5.1.4.1.1.2")


def study_with(endpoint: list[dict[str, Any]]) -> dict[str, Any]:
    return build.imaging_study(study_uid=STUDY, status="available", summary=SUMMARY,
                               based_on={"reference": "ServiceRequest/sr-1"},
                               subject={"reference": "Patient/p"}, modality="CT",
                               series_count=1, instance_count=2,
                               endpoint=endpoint)


def test_the_archive_endpoints_are_contained_and_referenced() -> None:
    found = build.endpoints("https://pacs.example.org/dicom-web", ("CT_ARCHIVE", "LTA"),
                            {"CT_ARCHIVE": "pacs.example.org:104"})
    study = study_with(found)
    assert build.validate(study) == ""
    wado, dimse = study["contained"]
    assert (wado["id"], wado["status"], wado["address"], wado["name"]) == (
        "wado-rs", "active", "https://pacs.example.org/dicom-web", "retrieve AE CT_ARCHIVE, LTA")
    assert wado["connectionType"] == {"system": build.CONNECTION_TYPE, "code": "dicom-wado-rs",
                                      "display": "DICOM WADO-RS"}
    assert wado["payloadType"] == [{"text": "DICOM"}]
    # a retrieve AE with a known address (LTA has none: R4 needs one)
    assert (dimse["connectionType"]["code"], dimse["name"], dimse["address"]) == (
        "dicom-dimse", "CT_ARCHIVE", "tcp://pacs.example.org:104")
    assert dimse["identifier"] == [{"system": "urn:dicom:ae", "value": "CT_ARCHIVE"}]
    refs = [{"reference": "#wado-rs"}, {"reference": "#dimse-1"}]
    assert study["endpoint"] == refs and study["series"][0]["endpoint"] == refs
    # the R4B model reads the contained Endpoints back as Endpoints
    from fhir.resources.R4B.imagingstudy import ImagingStudy
    parsed = ImagingStudy.model_validate(study)
    assert [c.get_resource_type() for c in parsed.contained or []] == ["Endpoint"] * 2


def test_no_endpoint_without_a_url_or_an_address() -> None:
    assert build.endpoints("", ("CT_ARCHIVE",), {}) == []
    assert build.endpoints("", (), {"CT_ARCHIVE": "h:104"}) == []
    study = study_with([])
    assert "endpoint" not in study and "contained" not in study
    assert "endpoint" not in study["series"][0]
    [wado] = build.endpoints("http://pacs/wado", (), {})
    assert "name" not in wado
    [dimse] = build.endpoints("", (" ", "CT_ARCHIVE"), {"CT_ARCHIVE": "h:104"})
    assert (dimse["id"], dimse["address"]) == ("dimse-1", "tcp://h:104")


def test_a_broken_resource_is_named_not_raised() -> None:
    broken = {**a_task(), "executionPeriod": {"start": "yesterday"}}
    assert "start" in build.validate(broken)
    assert "not a Task or ImagingStudy" in build.validate({"resourceType": "Patient"})


def test_datetimes() -> None:
    assert build.fhir_datetime("20261122101500").startswith("2026-11-22T10:15:00")
    assert build.fhir_datetime("20261122") == "2026-11-22"
    assert build.fhir_datetime("") == build.fhir_datetime("2026x") == ""


def test_operation_outcome_diagnostics() -> None:
    text = ('{"resourceType": "OperationOutcome", "issue": [{"severity": "error",'
            ' "code": "invalid", "diagnostics": "bad focus"}]}')
    assert diagnostics(text) == "error invalid: bad focus"
    assert diagnostics("<html>busy</html>") == "<html>busy</html>"


@pytest.mark.parametrize(("body", "fragment"), [
    ("url: ftp://x", "must start with http:// or https://"),
    ("url: http://x\n    oauth2_token_url: http://t", "needs client_id"),
    ("url: http://x\n    oauth2_token_url: http://t\n    client_id: c", "needs client_secret"),
    ("url: http://x\n    token: a\n    token_file: b", "not both"),
    ("url: http://x\n    name: ris", "also the name of another destination"),
    ("url: http://x\n    timeout: 0", "timeout 0.0 must be more than 0"),
    ("url: http://x\n    wado_rs_url: pacs/wado", "wado_rs_url 'pacs/wado' must start with"),
    ("url: http://x\n    dimse_addresses: {CT_ARCHIVE: pacs}", "'pacs' must be host:port"),
    ("url: http://x\n    dimse_addresses: {CT_ARCHIVE: 'pacs:0'}", "must be host:port"),
    ("url: http://x\n    dimse_addresses: {AN_AE_TITLE_TOO_LONG: 'pacs:104'}",
     "is not an AE title"),
])
def test_destination_setting_errors(tmp_path: Path, body: str, fragment: str) -> None:
    path = tmp_path / "broker.yaml"
    path.write_text("outbound:\n  destinations:\n    - {name: ris, host: h, port: 1}\n"
                    "fhir:\n  destination:\n    " + body + "\n", "utf-8")
    with pytest.raises(ConfigError, match=r"fhir\.destination") as info:
        load_settings(path)
    assert fragment in str(info.value)


def test_an_invalid_resource_is_logged_and_not_queued(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    from broker.store.sqlite.writer import SqliteWriter
    from broker.store.unit_of_work import UnitOfWork
    from broker.workflow.fhir_status import TASK_TYPE, FhirStatus

    writer = SqliteWriter(tmp_path / "broker.sqlite")
    writer.start()
    try:
        status = FhirStatus("fhir")
        broken = {**a_task(), "executionPeriod": {"start": "yesterday"}}

        def job(uow: UnitOfWork) -> tuple[int, int]:
            bad = status._queue(uow, STUDY, TASK_TYPE, broken)
            good = status._queue(uow, STUDY, TASK_TYPE, a_task())
            return bad, good
        assert writer.run_sync(job) == (0, 1)
        rows = writer.run_sync(lambda uow: uow.outbox.conn.execute(
            "SELECT destination, message_type, payload FROM outbox").fetchall())
    finally:
        writer.stop()
    assert [(d, t) for d, t, _ in rows] == [("fhir", TASK_TYPE)]
    assert '"method":"PUT","path":"Task/sps-' in rows[0][2]
    assert "fhir_resource_invalid" in caplog.text
