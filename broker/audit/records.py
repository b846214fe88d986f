"""The record events of what the flows committed: patient and order records from an accepted
HL7 message's domain events, procedure records from an MPPS (its DICOM JSON). The flows call
these with one line each, after their store job committed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from pydicom.datadict import keyword_dict

from broker.audit import events as ev
from broker.audit.trail import AuditTrail
from broker.model.orders import (
    Event,
    OrderAction,
    OrderChange,
    PatientIdChange,
    PatientKey,
    PatientMerge,
    PatientUpdate,
    StepStatus,
)

Merge = Callable[[dict[str, Any]], tuple[dict[str, Any], str, dict[str, Any]]]
#: an order whose steps all end so is withdrawn: audited as a delete ('D')
WITHDRAWN = (StepStatus.CANCELED, StepStatus.DISCONTINUED)


def record_ingest(audit: AuditTrail | None, events: Sequence[Event], code: str,
                  duplicate: bool, *, control_id: str, sender: str, facility: str,
                  peer: str) -> None:
    """One patient or order record per event of an accepted HL7 message (AA, not a
    resend); the sender is MSH-3|MSH-4 at ``peer``, MSH-10 a detail of each patient."""
    if audit is None or not audit.enabled or code != "AA" or duplicate:
        return
    who = ev.remote(f"{sender}|{facility}", peer, True)
    msh10 = (("MSH-10", control_id.encode()),) if control_id else ()
    for e in events:
        if isinstance(e, OrderChange):
            patient = (_patient(e.patient.key, e.patient.attrs, msh10) if e.patient is not None
                       else ev.PatientRef("", details=msh10))
            attrs = e.procedure.attrs
            control, _, status = e.control.partition("_")  # the mapping's ORC-1_ORC-5
            order = ev.OrderRef(_text(attrs.get("AccessionNumber")),
                                _text(attrs.get("PlacerOrderNumberImagingServiceRequest")),
                                _text(attrs.get("FillerOrderNumberImagingServiceRequest")),
                                control, status)
            audit.order_record(_order_action(e), patient, order, who)
        elif isinstance(e, PatientMerge):
            audit.patient_record(ev.UPDATE, _patient(
                e.surviving.key, e.surviving.attrs,
                (*msh10, ("MergedPatientID", str(e.prior).encode()))), who)
            audit.patient_record(ev.DELETE, _patient(e.prior, {}, msh10), who)
        elif isinstance(e, PatientIdChange):
            audit.patient_record(ev.UPDATE, _patient(
                e.patient.key, e.patient.attrs,
                (*msh10, ("PriorPatientID", str(e.old).encode()))), who)
        elif isinstance(e, PatientUpdate):
            audit.patient_record(ev.UPDATE, _patient(e.patient.key, e.patient.attrs, msh10),
                                 who)


def record_mpps(audit: AuditTrail | None, created: bool, uid: str, dataset: dict[str, Any],
                replayed: bool, calling_ae: str = "", peer: str = "") -> None:
    """The procedure record of an MPPS N-CREATE (``created``) or N-SET that changed it:
    ``dataset`` is the whole MPPS after it, as DICOM JSON."""
    if audit is None or not audit.enabled or replayed:
        return
    patient = ev.PatientRef(_cx(_json(dataset, "PatientID"), _json(dataset, "IssuerOfPatientID")),
                            _json(dataset, "PatientName"))
    accessions: dict[str, list[str]] = {}
    for item in _items(dataset, "ScheduledStepAttributesSequence"):
        number = _json(item, "AccessionNumber")
        found = accessions.setdefault(_json(item, "StudyInstanceUID"), [])
        if number and number not in found:
            found.append(number)
    classes = Counter(_json(ref, "ReferencedSOPClassUID")
                      for series in _items(dataset, "PerformedSeriesSequence")
                      for key in ("ReferencedImageSequence",
                                  "ReferencedNonImageCompositeSOPInstanceSequence")
                      for ref in _items(series, key))
    sop_classes = tuple(sorted(classes.items()))
    studies = tuple(ev.StudyRef(study, tuple(numbers), sop_classes)
                    for study, numbers in accessions.items() if study)
    performer = ev.remote(calling_ae or _json(dataset, "PerformedStationAETitle"), peer, True)
    audit.procedure_record(ev.CREATE if created else ev.UPDATE, patient, studies, uid,
                           _json(dataset, "PerformedProcedureStepStatus"), performer)


class Remember:
    """Wraps an N-SET's merge to keep the whole MPPS it made (for ``record_mpps``)."""

    def __init__(self, merge: Merge) -> None:
        self.merge = merge
        self.dataset: dict[str, Any] = {}

    def __call__(self, stored: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, Any]]:
        dataset, status, summary = self.merge(stored)
        self.dataset = dataset
        return dataset, status, summary


def _order_action(e: OrderChange) -> str:
    if e.action is OrderAction.STATUS and e.status in WITHDRAWN:
        return ev.DELETE
    new = e.control.partition("_")[0] == "NW"
    return ev.CREATE if e.action is OrderAction.UPSERT and new else ev.UPDATE


def _patient(key: PatientKey, attrs: dict[str, Any], details: ev.Details) -> ev.PatientRef:
    return ev.PatientRef(str(key), _text(attrs.get("PatientName")), details)


def _cx(patient_id: str, issuer: str) -> str:
    return f"{patient_id}^^^{issuer}" if issuer else patient_id


def _text(value: Any) -> str:
    if isinstance(value, list):
        value = value[0] if value else ""
    return "" if value is None else str(value).strip()


def _json(item: dict[str, Any], keyword: str) -> str:
    """The first value of a DICOM JSON attribute as text (a person name's alphabetic group)."""
    values = (item.get(f"{keyword_dict[keyword]:08X}") or {}).get("Value") or [""]
    value = values[0]
    if isinstance(value, dict):
        value = value.get("Alphabetic", "")
    return str(value).strip()


def _items(item: dict[str, Any], keyword: str) -> list[dict[str, Any]]:
    return list((item.get(f"{keyword_dict[keyword]:08X}") or {}).get("Value") or [])
