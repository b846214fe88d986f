"""The FHIR R4 resources a FHIR server is told of a step's progress: a Task per step change
and an ImagingStudy per completed procedure (plain JSON dicts, validated by
:func:`validate` against the fhir.resources R4B models before they are queued).

Identity: a Task's id is derived from the step (Study Instance UID and Scheduled Procedure
Step ID), an ImagingStudy's from the Study Instance UID, so each is sent as ``PUT
Task/{id}`` (update as create): a retry or a later change of the same step updates the same
Task."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
#: the identifier system of a Task's step: "{Study Instance UID}/{SPS ID}"
STEP_SYSTEM = "urn:mwl-broker:scheduled-procedure-step"
#: the identifier system of an AE title (a Task's owner)
AE_SYSTEM = "urn:dicom:ae"
TASK_STATUS = {"IN PROGRESS": "in-progress", "COMPLETED": "completed",
               "DISCONTINUED": "failed"}
#: Endpoint.connectionType: R4's code system has WADO-RS but no DIMSE code (its binding is
#: extensible); DIMSE is the IHE RO SMRT profile's code
CONNECTION_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
DIMSE_CONNECTION_TYPE = "https://profiles.ihe.net/RO/SMRT/CodeSystem/dicom-endpoint-connection-type"


def resource_id(prefix: str, key: str) -> str:
    """A FHIR logical id (at most 64 of [A-Za-z0-9.-]) that is always the same for ``key``."""
    return f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:40]}"


def fhir_datetime(dicom: str) -> str:
    """A DICOM DA+TM (YYYYMMDD[HHMM[SS]]) as a FHIR dateTime in the broker's time zone
    (empty when it is not one)."""
    digits = dicom.strip()
    for fmt, size in (("%Y%m%d%H%M%S", 14), ("%Y%m%d%H%M", 12)):
        if len(digits) >= size:
            try:
                return datetime.strptime(digits[:size], fmt).astimezone().isoformat()
            except ValueError:
                return ""
    if len(digits) == 8 and digits.isdigit():
        return f"{digits[:4]}-{digits[4:6]}-{digits[6:]}"
    return ""


def order_identifiers(procedure: dict[str, Any]) -> list[dict[str, Any]]:
    """The accession number (ACSN) and placer order number (PLAC) of a requested procedure."""
    found = []
    for code, key in (("ACSN", "AccessionNumber"),
                      ("PLAC", "PlacerOrderNumberImagingServiceRequest")):
        value = str(procedure.get(key) or "").strip()
        if value:
            found.append({"type": {"coding": [{"system": V2_0203, "code": code}]},
                          "value": value})
    return found


def service_request_ref(link_id: str, procedure: dict[str, Any]) -> dict[str, Any]:
    """``ServiceRequest/{id}`` when the order came in over FHIR, else a logical reference by
    its accession number (by its placer order number when it has none)."""
    if link_id:
        return {"reference": f"ServiceRequest/{link_id}"}
    identifiers = order_identifiers(procedure)
    ref: dict[str, Any] = {"type": "ServiceRequest"}
    if identifiers:
        ref["identifier"] = identifiers[0]
    description = str(procedure.get("RequestedProcedureDescription") or "")
    if description:
        ref["display"] = description
    return ref


def patient_ref(subject: dict[str, Any], patient: dict[str, Any]) -> dict[str, Any]:
    """The ServiceRequest's subject when known, else a logical reference by patient ID
    (its issuer as the system when that is a URI, else as the assigner)."""
    if subject:
        return subject
    identifier: dict[str, Any] = {"value": str(patient.get("PatientID") or "")}
    issuer = str(patient.get("IssuerOfPatientID") or "")
    if ":" in issuer:
        identifier["system"] = issuer
    elif issuer:
        identifier["assigner"] = {"display": issuer}
    ref: dict[str, Any] = {"type": "Patient", "identifier": identifier}
    name = str(patient.get("PatientName") or "")
    if name:
        ref["display"] = name.replace("^", " ").strip()
    return ref


def task(*, study_uid: str, sps_id: str, status: str, summary: dict[str, Any],
         focus: dict[str, Any], subject: dict[str, Any], step: dict[str, Any],
         now: float) -> dict[str, Any]:
    """The Task of a step whose MPPS/UPS status became ``status`` (IN PROGRESS, COMPLETED,
    DISCONTINUED)."""
    key = f"{study_uid}/{sps_id}"
    resource: dict[str, Any] = {
        "resourceType": "Task", "id": resource_id("sps", key),
        "identifier": [{"system": STEP_SYSTEM, "value": key}],
        "basedOn": [focus], "status": TASK_STATUS[status], "intent": "order",
        "focus": focus, "for": subject,
        "lastModified": datetime.fromtimestamp(now).astimezone().isoformat(timespec="seconds")}
    if status == "DISCONTINUED":
        resource["statusReason"] = {"text": "performed procedure step discontinued"}
    description = str(step.get("ScheduledProcedureStepDescription") or "")
    if description:
        resource["description"] = description
    period = {k: v for k, v in (("start", fhir_datetime(str(summary.get("start") or ""))),
                                ("end", fhir_datetime(str(summary.get("end") or "")))) if v}
    if period:
        resource["executionPeriod"] = period
    station = str(summary.get("station") or "").strip()
    if station:
        resource["owner"] = {"identifier": {"system": AE_SYSTEM, "value": station},
                             "display": station}
    return resource


def endpoints(wado_rs_url: str, retrieve_aes: tuple[str, ...] | list[str],
              dimse_addresses: dict[str, str]) -> list[dict[str, Any]]:
    """Where the study can be retrieved, as contained Endpoints: the archive's WADO-RS base
    (named after the retrieve AEs of the IAN, when known), and a DIMSE Endpoint per
    retrieve AE whose ``host:port`` ``dimse_addresses`` gives (R4 needs an address)."""
    aes = [a.strip() for a in retrieve_aes if a.strip()]
    found: list[dict[str, Any]] = []
    if wado_rs_url:
        wado: dict[str, Any] = {
            "resourceType": "Endpoint", "id": "wado-rs", "status": "active",
            "connectionType": {"system": CONNECTION_TYPE, "code": "dicom-wado-rs",
                               "display": "DICOM WADO-RS"}}
        if aes:
            wado["name"] = "retrieve AE " + ", ".join(aes)
        wado.update({"payloadType": [{"text": "DICOM"}],
                     "payloadMimeType": ["application/dicom"], "address": wado_rs_url})
        found.append(wado)
    for n, ae in enumerate(a for a in aes if dimse_addresses.get(a)):
        found.append({
            "resourceType": "Endpoint", "id": f"dimse-{n + 1}", "status": "active",
            "identifier": [{"system": AE_SYSTEM, "value": ae}],
            "connectionType": {"system": DIMSE_CONNECTION_TYPE, "code": "dicom-dimse",
                               "display": "DICOM DIMSE"},
            "name": ae, "payloadType": [{"text": "DICOM"}],
            "payloadMimeType": ["application/dicom"],
            "address": f"tcp://{dimse_addresses[ae]}"})
    return found


def imaging_study(*, study_uid: str, status: str, summary: dict[str, Any],
                  based_on: dict[str, Any], subject: dict[str, Any], modality: str,
                  series_count: int, instance_count: int,
                  endpoint: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The ImagingStudy of a completed procedure: the study and its series and instances as
    the MPPS/UPS listed them (``summary["instances"]``: SOP Instance, SOP Class, Series);
    ``endpoint``: contained Endpoints (:func:`endpoints`) the study and its series name."""
    series: dict[str, list[dict[str, Any]]] = {}
    for sop_uid, sop_class, series_uid in summary.get("instances") or []:
        instance: dict[str, Any] = {"uid": sop_uid}
        if sop_class:
            instance["sopClass"] = {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{sop_class}"}
        series.setdefault(series_uid, []).append(instance)
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy", "id": resource_id("study", study_uid),
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"}],
        "status": status, "subject": subject, "basedOn": [based_on],
        "numberOfSeries": max(series_count, len([s for s in series if s])),
        "numberOfInstances": max(instance_count, sum(len(i) for i in series.values()))}
    started = fhir_datetime(str(summary.get("start") or ""))
    if started:
        resource["started"] = started
    if modality:
        resource["modality"] = [{"system": DCM, "code": modality}]
    listed = [{"uid": uid, "number": n,
               **({"modality": {"system": DCM, "code": modality}} if modality else {}),
               "numberOfInstances": len(instances), "instance": instances}
              for n, (uid, instances) in enumerate(series.items(), 1) if uid]
    refs = [{"reference": f"#{e['id']}"} for e in endpoint or []]
    if refs:
        resource["contained"] = list(endpoint or [])
        resource["endpoint"] = refs
        for entry in listed:
            entry["endpoint"] = [dict(r) for r in refs]
    if listed and modality:  # R4: a series needs its modality
        resource["series"] = listed
    return resource


def validate(resource: dict[str, Any]) -> str:
    """Why ``resource`` is not a valid FHIR R4 (R4B models) Task or ImagingStudy ('' when it
    is)."""
    from fhir.resources.R4B.imagingstudy import ImagingStudy
    from fhir.resources.R4B.task import Task

    kind = str(resource.get("resourceType"))
    if kind not in ("Task", "ImagingStudy"):
        return f"not a Task or ImagingStudy: {kind!r}"
    try:
        if kind == "Task":
            Task.model_validate(resource)
        else:
            ImagingStudy.model_validate(resource)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        return str(exc).replace("\n", " ")[:500]
    return ""
