"""A scheduled step as a UPS workitem (the UPS IOD, PS3.3 C.30) and a UPS Push N-CREATE as
patient, requested procedure and step: the attribute mapping of docs/dicom-conformance.md,
"Unified Procedure Step"."""

from __future__ import annotations

import uuid
from typing import Any

from broker.model.orders import Attrs
from broker.model.ups import PUSH, UpsState

#: the coding scheme of the station codes: the code value is the station's AE title
STATION_SCHEME = "99MWLBROKER"
PRIORITY = {"STAT": "HIGH", "HIGH": "HIGH", "ROUTINE": "MEDIUM", "MEDIUM": "MEDIUM",
            "LOW": "LOW"}
MWL_PRIORITY = {"HIGH": "HIGH", "MEDIUM": "MEDIUM", "LOW": "LOW"}
#: attributes of a workitem the broker keeps in the step, the procedure or the patient (the
#: rest of an N-CREATE / N-SET is kept as the workitem's own)
MAPPED = frozenset({
    "SOPClassUID", "SOPInstanceUID", "ProcedureStepState", "PatientName", "PatientID",
    "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "ReferencedRequestSequence", "ScheduledProcedureStepStartDateTime",
    "ScheduledStationNameCodeSequence", "ProcedureStepLabel", "ScheduledProcedureStepPriority",
    "TransactionUID", "SpecificCharacterSet"})
PATIENT_KEYS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
                "PatientSex")
REQUEST_KEYS = ("StudyInstanceUID", "AccessionNumber", "IssuerOfAccessionNumberSequence",
                "RequestedProcedureID", "RequestedProcedureDescription",
                "RequestedProcedureCodeSequence", "PlacerOrderNumberImagingServiceRequest",
                "FillerOrderNumberImagingServiceRequest", "ReasonForTheRequestedProcedure",
                "ReasonForRequestedProcedureCodeSequence")
STATIONS = "ScheduledStationNameCodeSequence"
STUDY_UID_NAMESPACE = uuid.UUID("3f1c8f26-2d7b-4b0e-8a47-8d8b3d5d0e21")


def _stations(step: Attrs) -> list[str]:
    value = step.get("ScheduledStationAETitle") or []
    return [str(v) for v in (value if isinstance(value, list) else [value]) if v]


def _codes(items: Any) -> list[str]:
    return [str(item.get("CodeValue")) for item in items if isinstance(item, dict)
            and item.get("CodeValue")] if isinstance(items, list) else []


def workitem_attrs(uid: str, state: UpsState, patient: Attrs, procedure: Attrs, step: Attrs,
                   own: Attrs | None = None) -> Attrs:
    """The workitem's attributes (DICOM keywords; sequences as lists of dicts); its
    Transaction UID is never among them (PS3.4 CC.2.6: N-GET does not return it)."""
    date = str(step.get("ScheduledProcedureStepStartDate", "") or "")
    time = str(step.get("ScheduledProcedureStepStartTime", "") or "").replace(":", "")
    label = (step.get("ScheduledProcedureStepDescription")
             or procedure.get("RequestedProcedureDescription")
             or f"step {step.get('ScheduledProcedureStepID', '')}")
    out: Attrs = {
        "SOPClassUID": PUSH, "SOPInstanceUID": uid, "ProcedureStepState": state.value,
        "InputReadinessState": "READY",
        "ScheduledProcedureStepPriority": PRIORITY.get(
            str(procedure.get("RequestedProcedurePriority", "")).upper(), "MEDIUM"),
        "ProcedureStepLabel": str(label)[:64],
        "WorklistLabel": ", ".join(_stations(step)) or str(step.get("Modality", "")),
        "ScheduledProcedureStepStartDateTime": (date + time.split(".")[0])[:14] if date
        else "",
        "ScheduledStationNameCodeSequence": [
            {"CodeValue": aet, "CodingSchemeDesignator": STATION_SCHEME,
             "CodeMeaning": str(step.get("ScheduledStationName") or aet)}
            for aet in _stations(step)],
        "StudyInstanceUID": procedure.get("StudyInstanceUID", ""),
        "ReferencedRequestSequence": [{k: procedure[k] for k in REQUEST_KEYS
                                       if procedure.get(k)}],
    }
    for key in PATIENT_KEYS:
        if patient.get(key):
            out[key] = patient[key]
    protocol = step.get("ScheduledProtocolCodeSequence")
    if isinstance(protocol, list) and protocol:
        out["ScheduledWorkitemCodeSequence"] = protocol[:1]
    if step.get("Modality"):
        out.setdefault("ScheduledWorkitemCodeSequence", [
            {"CodeValue": str(step["Modality"]), "CodingSchemeDesignator": "DCM",
             "CodeMeaning": str(step["Modality"])}])
    for key, value in (own or {}).items():  # an N-SET's values over the step's
        if key == STATIONS and _codes(value) != _stations(step):
            continue  # the station codes given for other stations than the step's now
        if key not in ("SOPClassUID", "SOPInstanceUID", "ProcedureStepState",
                       "TransactionUID", "SpecificCharacterSet"):
            out[key] = value
    return out


def from_create(uid: str, attrs: Attrs) -> tuple[Attrs, Attrs, Attrs, Attrs]:
    """A UPS Push N-CREATE's attributes as (patient, procedure, step, the workitem's own)."""
    patient = {k: attrs[k] for k in PATIENT_KEYS if attrs.get(k)}
    requests = attrs.get("ReferencedRequestSequence") or [{}]
    request: Attrs = requests[0] if isinstance(requests, list) and requests and isinstance(
        requests[0], dict) else {}
    study = (str(attrs.get("StudyInstanceUID") or "") or str(request.get("StudyInstanceUID")
             or "") or f"2.25.{uuid.uuid5(STUDY_UID_NAMESPACE, uid).int}")
    procedure: Attrs = {k: request[k] for k in REQUEST_KEYS if request.get(k)}
    procedure["StudyInstanceUID"] = study
    priority = str(attrs.get("ScheduledProcedureStepPriority", "")).upper()
    if priority in MWL_PRIORITY:
        procedure["RequestedProcedurePriority"] = MWL_PRIORITY[priority]
    start = str(attrs.get("ScheduledProcedureStepStartDateTime") or "")
    stations = _codes(attrs.get(STATIONS))
    sps_id = f"UPS{uuid.uuid5(STUDY_UID_NAMESPACE, uid).hex[:13]}"  # SH: 16 characters
    step: Attrs = {"ScheduledProcedureStepID": sps_id}
    if start:
        step["ScheduledProcedureStepStartDate"] = start[:8]
        if len(start) > 8:
            step["ScheduledProcedureStepStartTime"] = start[8:14]
    if stations:
        step["ScheduledStationAETitle"] = stations if len(stations) > 1 else stations[0]
    if attrs.get("ProcedureStepLabel"):
        step["ScheduledProcedureStepDescription"] = str(attrs["ProcedureStepLabel"])[:64]
    codes = attrs.get("ScheduledWorkitemCodeSequence")
    if isinstance(codes, list) and codes and isinstance(codes[0], dict):
        first = codes[0]
        if first.get("CodingSchemeDesignator") == "DCM" and len(str(first.get(
                "CodeValue", ""))) <= 16:
            step["Modality"] = str(first.get("CodeValue"))
    own = {k: v for k, v in attrs.items() if k not in MAPPED}
    if stations:  # their schemes and meanings as given
        own[STATIONS] = attrs[STATIONS]
    return patient, procedure, step, own


def merge_set(own: Attrs, changes: Attrs) -> Attrs:
    """An N-SET's attributes into the workitem's own (an empty value removes one)."""
    out = dict(own)
    for key, value in changes.items():
        if key in ("SOPInstanceUID", "SOPClassUID", "TransactionUID",
                   "SpecificCharacterSet"):
            continue
        if value in (None, "", []):
            out.pop(key, None)
        else:
            out[key] = value
    return out


def performed(own: Attrs) -> dict[str, Any]:
    """The first item of the Unified Procedure Step Performed Procedure Sequence."""
    items = own.get("UnifiedProcedureStepPerformedProcedureSequence") or []
    return items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}


def attrs_of(ds: Any) -> Attrs:
    """A pydicom Dataset as attributes by keyword (sequences as lists of dicts, multiple
    values as lists, person names and numbers as text; elements without a keyword or with
    binary values are left out)."""
    out: Attrs = {}
    for elem in ds:
        keyword = elem.keyword
        if not keyword or elem.tag.group in (0x0000, 0x0002):
            continue
        if elem.VR == "SQ":
            out[keyword] = [attrs_of(item) for item in elem.value or []]
        elif elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
            continue
        elif elem.value is None or elem.value == "":
            out[keyword] = ""
        elif elem.VM > 1:
            out[keyword] = [str(v) for v in elem.value]
        else:
            out[keyword] = str(elem.value)
    return out
