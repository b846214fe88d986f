"""The FHIR mapping (mappings/fhir.yaml): FHIRPath → worklist attributes, its tables and
status table, station rules and Study Instance UID policy, and load-time file:line errors."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest

from broker.mapping.engine import generate_study_uid
from broker.mapping.fhir_engine import FhirMappingError, map_patient, map_service_request
from broker.mapping.schema import MappingLoadError, load_mappings
from broker.mapping.specs import MappingSet, StationRule
from broker.model.orders import OrderAction, StepStatus
from tests.support.fhir import appointment, encounter, patient, service_request

MAPPINGS = Path(__file__).resolve().parents[3] / "mappings"


@pytest.fixture(scope="module")
def shipped() -> MappingSet:
    return load_mappings(MAPPINGS)


def test_a_service_request_maps_to_an_hl7_like_order(shipped: MappingSet) -> None:
    sr = service_request(study_uid="1.2.3.4")
    sr["note"] = [{"text": "first"}, {"text": "second"}]
    sr["reasonCode"] = [{"text": "cough"}]
    sr["requester"] = {"display": "Dr Who"}
    order = map_service_request(sr, patient(), shipped)
    assert order is not None
    assert (order.action, order.status, order.control) == (
        OrderAction.UPSERT, StepStatus.SCHEDULED, "FHIR active/order")
    assert order.patient is not None
    assert (order.patient.key.patient_id, order.patient.key.issuer) == (
        "FP1", "1.2.826.0.1.99.1")
    assert order.patient.attrs == {"PatientName": "FHIR^Jane", "PatientBirthDate": "19700203",
                                   "PatientSex": "F"}
    attrs = order.procedure.attrs
    assert attrs["StudyInstanceUID"] == "1.2.3.4" and not order.procedure.generated_uid
    assert (attrs["AccessionNumber"], attrs["RequestedProcedureID"],
            attrs["PlacerOrderNumberImagingServiceRequest"]) == ("FACC1", "FACC1", "FPLC1")
    assert attrs["RequestedProcedurePriority"] == "STAT"
    assert attrs["RequestedProcedureCodeSequence"] == [
        {"CodeValue": "24627-2", "CodingSchemeDesignator": "LN", "CodeMeaning": "CT Chest"}]
    assert attrs["RequestedProcedureComments"] == "first\r\nsecond"
    assert attrs["ReasonForTheRequestedProcedure"] == "cough"
    assert attrs["RequestingPhysician"] == "Dr Who"
    [step] = order.procedure.steps
    assert step.attrs["ScheduledStationAETitle"] == ["CT01"]
    assert (step.attrs["Modality"], step.attrs["ScheduledProcedureStepStartDate"],
            step.attrs["ScheduledProcedureStepStartTime"], step.sps_id) == (
        "CT", "20270301", "093000", "1")
    assert order.origin["AccessionNumber"].startswith("ServiceRequest.identifier")
    assert order.origin["PatientID"].startswith("Patient.identifier")


def test_the_encounter_and_appointment_of_an_order(shipped: MappingSet) -> None:
    visit, booking = encounter(), appointment("ServiceRequest/sr1")
    order = map_service_request(service_request(), patient(), shipped, visit, booking)
    assert order is not None
    attrs = order.procedure.attrs
    assert (attrs["AdmissionID"], attrs["CurrentPatientLocation"],
            attrs["ReferringPhysicianName"]) == ("V100", "Ward 5, bed 2", "Ref^Doctor")
    assert (attrs["AdmittingDate"], attrs["AdmittingTime"]) == ("20270228", "221000")
    [step] = order.procedure.steps
    # the booked slot and modality win over the ServiceRequest's occurrence and performer
    assert (step.attrs["ScheduledProcedureStepStartDate"],
            step.attrs["ScheduledProcedureStepStartTime"]) == ("20270302", "144500")
    assert step.attrs["ScheduledStationAETitle"] == ["CT02"]
    assert step.attrs["ScheduledStationName"] == ["CT02 scanner"]
    assert step.attrs["ScheduledProcedureStepLocation"] == "CT room 2"
    assert order.origin["AdmissionID"] == "Encounter.identifier.where(use='official').value.first()"
    assert order.origin["ScheduledProcedureStepStartDate"] == "Appointment.start"


def test_without_encounter_or_appointment_the_request_decides(shipped: MappingSet) -> None:
    sr = service_request()
    sr["encounter"] = {"identifier": {"value": "LOGICAL9"}}
    booking = appointment("ServiceRequest/sr1")
    booking["participant"] = [{"actor": {"display": "a nurse"}, "status": "accepted"}]
    del booking["start"]
    order = map_service_request(sr, patient(), shipped, None, booking)
    assert order is not None
    assert order.procedure.attrs["AdmissionID"] == "LOGICAL9"
    assert "CurrentPatientLocation" not in order.procedure.attrs
    [step] = order.procedure.steps
    assert (step.attrs["ScheduledProcedureStepStartDate"],
            step.attrs["ScheduledProcedureStepStartTime"]) == ("20270301", "093000")
    assert step.attrs["ScheduledStationAETitle"] == ["CT01"]
    visit = encounter()
    visit["identifier"] = [{"system": "s", "value": "ANY"}]  # no official one: the first
    visit["location"][1]["status"] = "completed"  # no active location: the first
    order = map_service_request(sr, patient(), shipped, visit)
    assert order is not None
    assert (order.procedure.attrs["AdmissionID"],
            order.procedure.attrs["CurrentPatientLocation"]) == ("ANY", "Emergency")


def test_a_bad_appointment_start_names_the_appointment(shipped: MappingSet) -> None:
    booking = appointment("ServiceRequest/sr1", start="tomorrow")
    with pytest.raises(FhirMappingError) as info:
        map_service_request(service_request(), patient(), shipped, None, booking)
    assert (info.value.code, info.value.expression) == ("value", "Appointment.start")


def test_a_missing_study_uid_is_derived_from_the_order(shipped: MappingSet) -> None:
    order = map_service_request(service_request(), patient(), shipped)
    assert order is not None and order.procedure.generated_uid
    assert order.procedure.study_uid == generate_study_uid("FHIR", "", ["FACC1", "FPLC1"])
    period = service_request(when="")
    del period["occurrenceDateTime"]
    period["occurrencePeriod"] = {"start": "2027-04-02"}
    again = map_service_request(period, patient(), shipped)
    assert again is not None and again.procedure.study_uid == order.procedure.study_uid
    assert again.procedure.steps[0].attrs["ScheduledProcedureStepStartDate"] == "20270402"
    assert "ScheduledProcedureStepStartTime" not in again.procedure.steps[0].attrs


@pytest.mark.parametrize(("status", "action", "step_status"), [
    ("revoked", OrderAction.STATUS, StepStatus.CANCELED),
    ("entered-in-error", OrderAction.STATUS, StepStatus.CANCELED),
])
def test_the_status_table(shipped: MappingSet, status: str, action: OrderAction,
                          step_status: StepStatus) -> None:
    order = map_service_request(service_request(status=status), patient(), shipped)
    assert order is not None and (order.action, order.status) == (action, step_status)
    assert order.procedure.steps == []


def test_ignored_and_unmapped_statuses(shipped: MappingSet) -> None:
    assert map_service_request(service_request(status="completed"), patient(), shipped) is None
    with pytest.raises(FhirMappingError) as info:
        map_service_request(service_request(status="on-hold"), patient(), shipped)
    assert info.value.expression == "ServiceRequest.status"
    proposal = service_request()
    proposal["intent"] = "proposal"
    with pytest.raises(FhirMappingError):
        map_service_request(proposal, patient(), shipped)


def test_station_rules_apply_to_a_request_without_a_station(shipped: MappingSet) -> None:
    sr = service_request(modality="MR")
    del sr["performer"]
    rules = [StationRule((("Modality", None, ("MR",)),), {"ScheduledStationAETitle": ["MR01"]},
                         "x:1"),
             StationRule((("MSH-4", object(), ("*",)),), {"ScheduledStationAETitle": ["NO"]},
                         "x:2")]  # type: ignore[arg-type]
    local = copy.copy(shipped)
    local.station_rules = rules
    order = map_service_request(sr, patient(), local)
    assert order is not None
    assert order.procedure.steps[0].attrs["ScheduledStationAETitle"] == ["MR01"]
    sr["category"][0]["coding"][0]["code"] = "CT"
    order = map_service_request(sr, patient(), local)
    assert order is not None and "ScheduledStationAETitle" not in order.procedure.steps[0].attrs


def test_patient_faults(shipped: MappingSet) -> None:
    nameless = patient()
    nameless["identifier"] = []
    with pytest.raises(FhirMappingError) as info:
        map_patient(nameless, shipped)
    assert info.value.expression == "Patient.identifier"
    with pytest.raises(FhirMappingError) as info:
        map_service_request(service_request(), None, shipped)
    assert info.value.expression == "ServiceRequest.subject"
    bad_date = patient()
    bad_date["birthDate"] = "19700101"
    with pytest.raises(FhirMappingError) as info:
        map_patient(bad_date, shipped)
    assert info.value.code == "value" and info.value.expression == "Patient.birthDate"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, target)
    return target


def broken(folder: Path, old: str, new: str) -> tuple[list[str], str]:
    path = folder / "fhir.yaml"
    text = path.read_text()
    assert text.count(old) == 1, old
    line = text[:text.index(old)].count("\n") + 1
    path.write_text(text.replace(old, new))
    with pytest.raises(MappingLoadError) as info:
        load_mappings(folder)
    return info.value.errors, f"{path}:{line}"


@pytest.mark.parametrize(("old", "new", "fragment"), [
    ('PatientBirthDate: {path: "%patient.birthDate", transform: date}',
     'PatientBirthDate: "%patient.birthDate"', "has VR DA: add 'transform: date'"),
    ("RequestingPhysician: requester.display", "RequestingPhysican: requester.display",
     "is not a DICOM keyword (did you mean 'RequestingPhysician'?)"),
    ("RequestingPhysician: requester.display", "RequestingPhysician: requester.where(",
     "FHIRPath"),
    ("RequestingPhysician: requester.display", "RequestingPhysician: '%visit.identifier'",
     "undefined environment variable"),
    ('"%appointment.start", occurrenceDateTime, occurrencePeriod.start],\n         transform: '
     "date}", '"%appointmnt.start"], transform: date}', "undefined environment variable"),
    ("transform: {lookup: fhir_priority}", "transform: {lookup: fhir_priorities}",
     "lookup table 'fhir_priorities' is not defined"),
    ("transform: human_name", "transform: human_nam", "unknown FHIR transform 'human_nam'"),
    ("revoked: {action: status, status: CANCELED}", "revokd: {action: status, status: CANCELED}",
     "'revokd' is not a ServiceRequest status"),
    ("draft: {action: ignore}", "draft: {action: hold}", "action must be one of"),
    ("active_order: {action: upsert", "active_ordr: {action: upsert", "is not a ServiceRequest "
     "intent"),
    ("missing: generate", "missing: maybe", "study_uid.missing must be generate or reject"),
])
def test_load_errors_name_file_and_line(folder: Path, old: str, new: str,
                                        fragment: str) -> None:
    errors, where = broken(folder, old, new)
    assert any(e.startswith(where + ":") and fragment in e for e in errors), errors


def test_a_second_fhir_block_is_refused(folder: Path) -> None:
    (folder / "zz.yaml").write_text("fhir:\n  servicerequest: {}\n")
    with pytest.raises(MappingLoadError) as info:
        load_mappings(folder)
    assert any("zz.yaml:1: fhir is defined twice" in e for e in info.value.errors)


def test_a_folder_without_fhir_mapping_answers_not_supported(folder: Path) -> None:
    (folder / "fhir.yaml").unlink()
    mappings = load_mappings(folder)
    assert mappings.fhir is None
    with pytest.raises(FhirMappingError) as info:
        map_service_request(service_request(), patient(), mappings)
    assert info.value.code == "not-supported"
