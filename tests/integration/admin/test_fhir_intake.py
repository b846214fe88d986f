"""FHIR R4 order intake at /fhir over a real broker: a transaction Bundle found by DCMTK
findscu on the worklist, invalid resources answered with an OperationOutcome naming the
element (nothing stored), idempotent reposts, updates that replace the step, revoked orders
cancelled, conditional create/update, read/search, the CapabilityStatement, content type,
size and token rules, and batches."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from pydicom.dataset import Dataset

from broker.app import Broker
from tests.support.broker import make_settings, running
from tests.support.dicom_peers import dump_to_dicom, findscu
from tests.support.fhir import (
    MRN_SYSTEM,
    ORDER_SYSTEM,
    FhirClient,
    appointment,
    encounter,
    order_bundle,
    patient,
    service_request,
)
from tests.support.mllp import msa, send
from tests.support.samples import order

pytestmark = pytest.mark.peers
DAY = "20270301"


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    async with running(make_settings(tmp_path)) as b:
        yield b


@pytest.fixture
async def fhir(broker: Broker) -> AsyncIterator[FhirClient]:
    assert broker.admin is not None
    client = FhirClient(broker.admin.bound_port)
    yield client
    await client.close()


async def worklist(broker: Broker, tmp: Path, station: str = "", status: str = ""
                   ) -> list[Dataset]:
    """DCMTK findscu's answers for the day (and station, SPS status when given)."""
    text = ("(0008,0005) CS [ISO_IR 192]\n(0010,0010) PN []\n(0010,0020) LO []\n"
            "(0010,0021) LO []\n(0010,0030) DA []\n(0010,0040) CS []\n(0008,0050) SH []\n"
            "(0020,000d) UI []\n(0040,1001) SH []\n(0040,1003) SH []\n(0032,1060) LO []\n"
            "(0040,2016) LO []\n(0040,0100) SQ\n(fffe,e000) -\n(0008,0060) CS []\n"
            f"(0040,0001) AE [{station}]\n(0040,0002) DA [{DAY}]\n(0040,0003) TM []\n"
            f"(0040,0009) SH []\n(0040,0010) SH []\n(0040,0020) CS [{status}]\n"
            "(fffe,e00d) -\n(fffe,e0dd) -\n")
    query = dump_to_dicom("", tmp / "query.dcm", text)
    answers, _ = await asyncio.to_thread(findscu, broker.dicom.bound_port, "MWLBROKER", query,
                                         tmp / "rsp")
    return answers


async def stored(broker: Broker, kind: str) -> int:
    return await broker.writer.run(lambda uow: uow.fhir.count(kind))


def expressions(outcome: dict[str, Any]) -> list[str]:
    assert outcome["resourceType"] == "OperationOutcome"
    return [e for issue in outcome["issue"] for e in issue.get("expression", [])]


async def test_a_transaction_bundle_lands_on_the_worklist(broker: Broker, fhir: FhirClient,
                                                          tmp_path: Path) -> None:
    answer = await fhir.post_bundle(order_bundle())
    assert answer.body["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in answer.body["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    request = answer.body["entry"][1]["resource"]
    patient_id = answer.body["entry"][0]["resource"]["id"]
    assert request["subject"]["reference"] == f"Patient/{patient_id}"
    found = await worklist(broker, tmp_path, "CT01")
    assert len(found) == 1
    ds = found[0]
    assert (ds.PatientID, ds.IssuerOfPatientID, str(ds.PatientName)) == (
        "FP1", "1.2.826.0.1.99.1", "FHIR^Jane")
    assert (ds.PatientBirthDate, ds.PatientSex) == ("19700203", "F")
    assert (ds.AccessionNumber, ds.PlacerOrderNumberImagingServiceRequest) == ("FACC1", "FPLC1")
    assert ds.RequestedProcedurePriority == "STAT"
    assert ds.RequestedProcedureDescription == "CT chest"
    sps = ds.ScheduledProcedureStepSequence[0]
    assert (sps.ScheduledStationAETitle, sps.Modality, sps.ScheduledProcedureStepStartDate,
            sps.ScheduledProcedureStepStartTime) == ("CT01", "CT", DAY, "093000")
    assert sps.ScheduledProcedureStepStatus == "SCHEDULED"
    # the status-back side finds the ServiceRequest by the Study Instance UID it became
    rows = await broker.writer.run(lambda uow: uow.fhir.by_study(ds.StudyInstanceUID))
    assert [(r.resource_type, r.id) for r in rows] == [("ServiceRequest", request["id"])]
    assert (rows[0].patient_id, rows[0].issuer) == ("FP1", "1.2.826.0.1.99.1")


async def test_an_invalid_bundle_names_the_element_and_stores_nothing(
        broker: Broker, fhir: FhirClient, tmp_path: Path) -> None:
    bundle = order_bundle()
    bundle["entry"][1]["resource"]["status"] = "bogus"
    bundle["entry"][1]["resource"]["code"]["coding"][0]["system"] = 5
    bundle["entry"][0]["resource"]["birthDate"] = "1970-13-45"
    answer = await fhir.post_bundle(bundle, 400)
    assert sorted(expressions(answer.body)) == [
        "Bundle.entry[0].resource.birthDate", "Bundle.entry[1].resource.code.coding[0].system",
        "Bundle.entry[1].resource.status"]
    assert {i["severity"] for i in answer.body["issue"]} == {"error"}
    assert all(i["diagnostics"] for i in answer.body["issue"])
    # a reference to an entry the Bundle does not have: a business rule (422)
    loose = order_bundle()
    loose["entry"][1]["resource"]["subject"]["reference"] = "urn:uuid:nobody"
    answer = await fhir.post_bundle(loose, 422)
    assert expressions(answer.body) == ["Bundle.entry[1].resource.subject"]
    # a status the status table does not list: 422, and the Patient of the same
    # transaction is not stored either
    held = order_bundle(status="on-hold")
    answer = await fhir.post_bundle(held, 422)
    assert expressions(answer.body) == ["Bundle.entry[1].resource.status"]
    assert await stored(broker, "Patient") == await stored(broker, "ServiceRequest") == 0
    assert await worklist(broker, tmp_path) == []


async def test_the_same_bundle_twice_changes_nothing(broker: Broker, fhir: FhirClient,
                                                     tmp_path: Path) -> None:
    bundle = order_bundle()
    first = await fhir.post_bundle(bundle)
    again = await fhir.post_bundle(copy.deepcopy(bundle))
    assert [e["response"]["status"] for e in again.body["entry"]] == ["200 OK", "200 OK"]
    assert [e["resource"]["id"] for e in again.body["entry"]] == [
        e["resource"]["id"] for e in first.body["entry"]]
    assert [e["resource"]["meta"] for e in again.body["entry"]] == [
        e["resource"]["meta"] for e in first.body["entry"]]
    # a fresh Bundle of the same order (new urn:uuid fullUrls) is the same order too
    third = await fhir.post_bundle(order_bundle())
    assert [e["response"]["etag"] for e in third.body["entry"]] == ['W/"1"', 'W/"1"']
    assert await stored(broker, "ServiceRequest") == 1
    assert len(await worklist(broker, tmp_path)) == 1


async def test_an_update_replaces_the_step(broker: Broker, fhir: FhirClient,
                                           tmp_path: Path) -> None:
    await fhir.post_bundle(order_bundle(station="CT01"))
    moved = await fhir.post_bundle(order_bundle(station="CT02",
                                                when="2027-03-01T11:00:00+01:00"))
    assert moved.body["entry"][1]["response"]["etag"] == 'W/"2"'
    assert await worklist(broker, tmp_path, "CT01") == []
    found = await worklist(broker, tmp_path, "CT02")
    assert len(found) == 1
    sps = found[0].ScheduledProcedureStepSequence[0]
    assert (sps.ScheduledProcedureStepStartTime, sps.ScheduledProcedureStepID) == (
        "110000", "1")
    assert len(await worklist(broker, tmp_path)) == 1


async def test_a_revoked_order_is_cancelled(broker: Broker, fhir: FhirClient,
                                            tmp_path: Path) -> None:
    first = await fhir.post_bundle(order_bundle())
    request = first.body["entry"][1]["resource"]
    assert len(await worklist(broker, tmp_path)) == 1
    revoked = {**request, "status": "revoked"}
    revoked.pop("meta")
    answer = await fhir.call("PUT", f"/ServiceRequest/{request['id']}", revoked, 200)
    assert answer.body["status"] == "revoked"
    assert await worklist(broker, tmp_path) == []
    cancelled = await worklist(broker, tmp_path, status="CANCELED")
    assert [a.AccessionNumber for a in cancelled] == ["FACC1"]
    # entered-in-error on an order the broker never had: 422, nothing stored
    unknown = service_request("NOPE", "NOPE", status="entered-in-error",
                              subject=request["subject"]["reference"])
    answer = await fhir.call("POST", "/ServiceRequest", unknown, 422)
    assert answer.body["issue"][0]["code"] == "not-found"
    assert await stored(broker, "ServiceRequest") == 1


async def test_conditional_create_and_update(broker: Broker, fhir: FhirClient,
                                             tmp_path: Path) -> None:
    condition = {"If-None-Exist": f"identifier={MRN_SYSTEM}|FP9"}
    created = await fhir.call("POST", "/Patient", patient("FP9"), 201, condition)
    pid = created.body["id"]
    assert created.headers["Location"] == f"/fhir/Patient/{pid}/_history/1"
    changed = patient("FP9", family="OTHER")
    same = await fhir.call("POST", "/Patient", changed, 200, condition)
    assert same.body["id"] == pid and same.body["name"][0]["family"] == "FHIR"  # no change
    sr = service_request("FACC9", "FPLC9", subject=f"Patient/{pid}")
    made = await fhir.call("PUT", f"/ServiceRequest?identifier={ORDER_SYSTEM}|FPLC9", sr, 201)
    sr["priority"] = "routine"
    updated = await fhir.call("PUT", f"/ServiceRequest?identifier={ORDER_SYSTEM}|FPLC9", sr, 200)
    assert updated.body["id"] == made.body["id"] and updated.body["meta"]["versionId"] == "2"
    by_id = {**sr, "id": made.body["id"], "priority": "urgent"}
    third = await fhir.call("PUT", f"/ServiceRequest/{made.body['id']}", by_id, 200)
    assert third.body["meta"]["versionId"] == "3"
    found = await worklist(broker, tmp_path, "CT01")
    assert [a.RequestedProcedurePriority for a in found] == ["HIGH"]
    # the id of the URL and of the body differ: 400
    await fhir.call("PUT", f"/ServiceRequest/{made.body['id']}", sr, 400)
    # two patients hold identifier value FP7 (two systems): a condition without a system
    # matches both, 412
    other = patient("FP7")
    other["identifier"][0]["system"] = "urn:oid:9.9"
    await fhir.call("POST", "/Patient", patient("FP7"), 201)
    await fhir.call("POST", "/Patient", other, 201)
    answer = await fhir.call("POST", "/Patient", patient("FP7"), 412,
                             {"If-None-Exist": "identifier=FP7"})
    assert answer.body["issue"][0]["code"] == "multiple-matches"


async def test_read_and_search(broker: Broker, fhir: FhirClient) -> None:
    posted = await fhir.post_bundle(order_bundle())
    pat, req = (e["resource"] for e in posted.body["entry"])
    assert (await fhir.call("GET", f"/Patient/{pat['id']}", None, 200)).body == pat
    answer = await fhir.call("GET", f"/ServiceRequest/{req['id']}", None, 200)
    assert answer.body == req and answer.headers["Content-Type"].startswith(
        "application/fhir+json")
    missing = await fhir.call("GET", "/ServiceRequest/nope", None, 404)
    assert missing.body["issue"][0]["code"] == "not-found"
    for query in (f"identifier={ORDER_SYSTEM}|FACC1", "identifier=FPLC1",
                  f"patient={pat['id']}", f"subject=Patient/{pat['id']}"):
        found = await fhir.call("GET", f"/ServiceRequest?{query}", None, 200)
        assert found.body["type"] == "searchset" and found.body["total"] == 1, query
        assert found.body["entry"][0]["resource"]["id"] == req["id"]
    assert (await fhir.call("GET", f"/ServiceRequest?identifier={MRN_SYSTEM}|FACC1", None,
                            200)).body["total"] == 0
    found = await fhir.call("GET", f"/Patient?identifier={MRN_SYSTEM}|FP1", None, 200)
    assert [e["resource"]["id"] for e in found.body["entry"]] == [pat["id"]]
    await fhir.call("GET", "/Patient?name=x", None, 400)
    await fhir.call("GET", "/Observation/1", None, 404)


async def test_metadata_is_a_valid_capability_statement(fhir: FhirClient) -> None:
    answer = await fhir.call("GET", "/metadata", None, 200)
    statement = CapabilityStatement.model_validate(answer.body)
    assert statement.fhirVersion == "4.0.1"
    rest = answer.body["rest"][0]
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch"}
    kinds = {r["type"]: r for r in rest["resource"]}
    assert set(kinds) == {"Patient", "ServiceRequest", "Encounter", "Appointment", "Coverage"}
    assert {p["name"] for p in kinds["ServiceRequest"]["searchParam"]} == {
        "identifier", "patient", "subject"}


async def test_batch_answers_each_entry(broker: Broker, fhir: FhirClient) -> None:
    good = order_bundle("batch")
    bad = order_bundle("batch", pid="FP2", accession="FACC2", placer="FPLC2")
    bad["entry"][1]["resource"]["intent"] = 5
    batch = {"resourceType": "Bundle", "type": "batch",
             "entry": good["entry"] + bad["entry"]}
    answer = await fhir.post_bundle(batch)
    assert answer.body["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in answer.body["entry"]]
    assert statuses == ["201 Created", "201 Created", "201 Created", "400 Bad Request"]
    outcome = answer.body["entry"][3]["response"]["outcome"]
    assert expressions(outcome) == ["Bundle.entry[3].resource.intent"]
    assert await stored(broker, "ServiceRequest") == 1
    assert await stored(broker, "Patient") == 2


async def test_content_type_size_and_kind(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    settings.fhir.intake.max_body_bytes = 4000
    b = Broker(settings)
    await b.start()
    try:
        assert b.admin is not None
        fhir = FhirClient(b.admin.bound_port)
        try:
            answer = await fhir.call("POST", "", None, 415, {"Content-Type": "text/plain"},
                                     data=b"{}")
            assert answer.body["resourceType"] == "OperationOutcome"
            big = order_bundle()
            big["entry"][1]["resource"]["note"] = [{"text": "x" * 5000}]
            await fhir.post_bundle(big, 413)
            await fhir.call("POST", "", None, 400, {"Content-Type": "application/json"},
                            data=b"{not json")
            answer = await fhir.call("POST", "", {"resourceType": "Bundle",
                                                  "type": "collection"}, 400)
            assert expressions(answer.body) == ["Bundle.type"]
            answer = await fhir.call("POST", "/Patient", service_request(), 400)
            await fhir.call("POST", "/ServiceRequest", service_request(subject="Patient/x"),
                            422)
            assert await stored(b, "ServiceRequest") == 0
            ok = await fhir.call("POST", "/Patient", patient(), 201,
                                 {"Content-Type": "application/json"})
            assert ok.body["resourceType"] == "Patient"
        finally:
            await fhir.close()
    finally:
        await b.stop()


async def test_fhir_sits_behind_the_admin_token(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    settings.admin.token = "s3cret-token"
    b = Broker(settings)
    await b.start()
    try:
        assert b.admin is not None
        port = b.admin.bound_port
        anonymous, signed = FhirClient(port), FhirClient(port, "s3cret-token")
        wrong = FhirClient(port, "wrong")
        try:
            assert (await anonymous.call("GET", "/metadata")).status == 401
            assert (await anonymous.call("POST", "", order_bundle())).status == 401
            assert (await wrong.call("POST", "", order_bundle())).status == 401
            assert await stored(b, "Patient") == 0
            await signed.post_bundle(order_bundle())
            await signed.call("GET", "/metadata", None, 200)
        finally:
            for client in (anonymous, signed, wrong):
                await client.close()
    finally:
        await b.stop()


async def test_requests_are_counted(broker: Broker, fhir: FhirClient) -> None:
    await fhir.post_bundle(order_bundle())
    await fhir.call("GET", "/Patient/nope", None, 404)
    text = broker.metrics.render().decode()
    assert 'mwl_fhir_requests_total{interaction="transaction",outcome="2xx"} 1.0' in text
    assert 'mwl_fhir_requests_total{interaction="read",outcome="4xx"} 1.0' in text


async def test_a_fhir_update_of_an_hl7_order_keeps_its_study_uid(broker: Broker,
                                                                 fhir: FhirClient,
                                                                 tmp_path: Path) -> None:
    """An order placed over HL7 (with its own Study Instance UID) and replaced over FHIR
    by placer and accession number: one procedure, and the ServiceRequest's study_uid is the
    procedure's (what the status back looks a step's ServiceRequest up by)."""
    hl7 = order(1, placer="FPLC1", accession="FACC1", start=f"{DAY}0800", station="CT01",
                patient_id="FP1")
    [ack] = await send(broker.mllp.bound_port, hl7.encode())
    assert msa(ack)[1] == "AA"
    await fhir.post_bundle(order_bundle(station="CT02"))
    found = await worklist(broker, tmp_path)
    assert [a.StudyInstanceUID for a in found] == [hl7.study_uid]
    assert found[0].ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "CT02"
    rows = await broker.writer.run(lambda uow: uow.fhir.by_study(hl7.study_uid or ""))
    assert [r.resource_type for r in rows] == ["ServiceRequest"]


async def test_the_encounter_and_appointment_reach_the_worklist(
        broker: Broker, fhir: FhirClient, tmp_path: Path) -> None:
    """A Bundle with the visit (Encounter) and the booking (Appointment basedOn the
    ServiceRequest): findscu shows the admission ID, the patient's location, the booked
    start time and station; a later conditional update of the Appointment moves the step."""
    bundle = order_bundle()
    sr_entry = bundle["entry"][1]
    visit_url, booking_url = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    sr_entry["resource"]["encounter"] = {"reference": visit_url}
    booking = appointment(sr_entry["fullUrl"], start=f"{DAY[:4]}-{DAY[4:6]}-{DAY[6:]}"
                          "T14:45:00+01:00", station="CT02")
    booking["identifier"] = [{"system": "urn:appt", "value": "APPT1"}]
    bundle["entry"] += [
        {"fullUrl": visit_url, "resource": encounter(visit="V100", ward="Ward 5, bed 2"),
         "request": {"method": "POST", "url": "Encounter"}},
        {"fullUrl": booking_url, "resource": booking,
         "request": {"method": "PUT", "url": "Appointment?identifier=urn:appt|APPT1"}}]
    answer = await fhir.post_bundle(bundle)
    assert [e["response"]["status"] for e in answer.body["entry"]] == ["201 Created"] * 4
    query = ("(0010,0020) LO []\n(0008,0050) SH []\n(0008,0090) PN []\n(0038,0010) LO []\n"
             "(0038,0020) DA []\n(0038,0300) LO []\n(0040,0100) SQ\n(fffe,e000) -\n"
             "(0040,0001) AE [CT02]\n"
             f"(0040,0002) DA [{DAY}]\n(0040,0003) TM []\n(0040,0010) SH []\n"
             "(0040,0011) SH []\n(fffe,e00d) -\n(fffe,e0dd) -\n")

    async def find() -> list[Dataset]:
        q = dump_to_dicom("", tmp_path / "visit.dcm", query)
        answers, _ = await asyncio.to_thread(findscu, broker.dicom.bound_port, "MWLBROKER",
                                             q, tmp_path / "rsp-visit")
        return answers
    [ds] = await find()
    assert (ds.AccessionNumber, ds.AdmissionID, ds.CurrentPatientLocation) == (
        "FACC1", "V100", "Ward 5, bed 2")
    assert (str(ds.ReferringPhysicianName), ds.AdmittingDate) == ("Ref^Doctor", "20270228")
    sps = ds.ScheduledProcedureStepSequence[0]
    assert (sps.ScheduledStationAETitle, sps.ScheduledProcedureStepStartTime,
            sps.ScheduledStationName, sps.ScheduledProcedureStepLocation) == (
        "CT02", "144500", "CT02 scanner", "CT room 2")
    # the booking moves on its own (the ServiceRequest is held): the step follows
    moved = copy.deepcopy(answer.body["entry"][3]["resource"])
    moved["start"] = f"{DAY[:4]}-{DAY[4:6]}-{DAY[6:]}T16:10:00+01:00"
    await fhir.call("PUT", "/Appointment?identifier=urn:appt|APPT1", moved, 200)
    [ds] = await find()
    assert ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime == "161000"
