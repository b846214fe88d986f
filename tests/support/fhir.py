"""FHIR R4 orders for tests and benchmarks (Patient + ServiceRequest, transaction Bundles)
and a small aiohttp client of the broker's /fhir."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp

FHIR_JSON = "application/fhir+json"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
MRN_SYSTEM = "urn:oid:1.2.826.0.1.99.1"
ORDER_SYSTEM = "urn:oid:1.2.826.0.1.99.2"


def patient(pid: str = "FP1", family: str = "FHIR", given: str = "Jane") -> dict[str, Any]:
    return {"resourceType": "Patient",
            "identifier": [{"type": {"coding": [{"system": V2_0203, "code": "MR"}]},
                            "system": MRN_SYSTEM, "value": pid}],
            "name": [{"use": "official", "family": family, "given": [given]}],
            "birthDate": "1970-02-03", "gender": "female"}


def service_request(accession: str = "FACC1", placer: str = "FPLC1", station: str = "CT01",
                    when: str = "2027-03-01T09:30:00+01:00", status: str = "active",
                    subject: str = "urn:uuid:patient", modality: str = "CT",
                    study_uid: str = "") -> dict[str, Any]:
    identifiers = [
        {"type": {"coding": [{"system": V2_0203, "code": "PLAC"}]}, "system": ORDER_SYSTEM,
         "value": placer},
        {"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]}, "system": ORDER_SYSTEM,
         "value": accession}]
    if study_uid:
        identifiers.append({"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"})
    return {"resourceType": "ServiceRequest", "status": status, "intent": "order",
            "priority": "stat", "identifier": identifiers,
            "category": [{"coding": [{"system": DCM, "code": modality}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "24627-2",
                                 "display": "CT Chest"}], "text": "CT chest"},
            "subject": {"reference": subject}, "occurrenceDateTime": when,
            "performer": [{"type": "Device", "display": f"{station} room",
                           "identifier": {"system": "urn:dicom:ae", "value": station}}]}


VISIT_SYSTEM = "urn:oid:1.2.826.0.1.99.3"


def encounter(visit: str = "V100", ward: str = "Ward 5, bed 2",
              referrer: str = "Ref^Doctor") -> dict[str, Any]:
    """An Encounter (the visit): its admission identifier and start, where the patient is
    now (the active location; an earlier one is completed) and the referring physician."""
    return {"resourceType": "Encounter", "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "IMP"},
            "identifier": [{"use": "official", "system": VISIT_SYSTEM, "value": visit}],
            "period": {"start": "2027-02-28T22:10:00+01:00"},
            "location": [{"location": {"display": "Emergency"}, "status": "completed"},
                         {"location": {"display": ward}, "status": "active"}],
            "participant": [{"type": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                "code": "REF"}]}], "individual": {"display": referrer}}]}


def appointment(request: str, start: str = "2027-03-02T14:45:00+01:00", station: str = "CT02",
                status: str = "booked", room: str = "CT room 2") -> dict[str, Any]:
    """An Appointment booking ServiceRequest ``request`` (a reference) on a modality, named
    by its AE title (identifier system urn:dicom:ae), in a room."""
    return {"resourceType": "Appointment", "status": status, "basedOn": [{"reference": request}],
            "start": start, "end": start[:11] + "23:59:00" + start[19:],
            "participant": [
                {"actor": {"type": "Device", "display": f"{station} scanner",
                           "identifier": {"system": "urn:dicom:ae", "value": station}},
                 "status": "accepted"},
                {"actor": {"type": "Location", "display": room}, "status": "accepted"}]}


def order_bundle(kind: str = "transaction", pid: str = "FP1", accession: str = "FACC1",
                 placer: str = "FPLC1", **request: Any) -> dict[str, Any]:
    """A Bundle of a Patient and a ServiceRequest referencing it by its urn:uuid fullUrl."""
    ref = f"urn:uuid:{uuid.uuid4()}"
    sr = service_request(accession, placer, subject=ref, **request)
    return {"resourceType": "Bundle", "type": kind, "entry": [
        {"fullUrl": ref, "resource": patient(pid),
         "request": {"method": "POST", "url": "Patient",
                     "ifNoneExist": f"identifier={MRN_SYSTEM}|{pid}"}},
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": sr,
         "request": {"method": "PUT",
                     "url": f"ServiceRequest?identifier={ORDER_SYSTEM}|{placer}"}}]}


@dataclass
class Answer:
    status: int
    body: Any
    headers: Any


class FhirClient:
    def __init__(self, port: int, token: str = "", host: str = "127.0.0.1") -> None:
        self.base = f"http://{host}:{port}/fhir"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60),
                                             headers=headers)

    async def close(self) -> None:
        await self.session.close()

    async def call(self, method: str, path: str = "", body: Any = None,
                   expect: int | None = None, headers: dict[str, str] | None = None,
                   data: bytes | None = None) -> Answer:
        h = {"Accept": FHIR_JSON, **(headers or {})}
        kwargs: dict[str, Any] = {"headers": h}
        if body is not None:
            kwargs["json"] = body
            h.setdefault("Content-Type", FHIR_JSON)
        elif data is not None:
            kwargs["data"] = data
        async with self.session.request(method, self.base + path, **kwargs) as r:
            text = await r.text()
            try:
                parsed: Any = await r.json(content_type=None)
            except ValueError:
                parsed = text
            answer = Answer(r.status, parsed, r.headers)
        if expect is not None:
            assert answer.status == expect, (answer.status, answer.body)
        return answer

    async def post_bundle(self, bundle: dict[str, Any], expect: int = 200) -> Answer:
        return await self.call("POST", "", bundle, expect)
