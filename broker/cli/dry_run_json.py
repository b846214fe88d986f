"""What ``mwl-broker map`` prints of the domain events a dry run made (HL7 or FHIR)."""

from __future__ import annotations

from typing import Any

#: the address a ``map`` dry run's messages come from (what hl7.allowed_senders is checked
#: against)
MAP_PEER = "127.0.0.1:0"


def events_json(events: Any) -> list[dict[str, Any]]:
    """The domain events as the dry run prints them (DICOM JSON attributes)."""
    from broker.dicom.dataset import to_json
    from broker.model.orders import OrderChange, PatientIdChange, PatientMerge, PatientUpdate

    out: list[dict[str, Any]] = []
    for ev in events:
        if isinstance(ev, OrderChange):
            patient = ev.patient
            out.append({
                "event": "order", "control": ev.control, "action": ev.action.value,
                "status": ev.status.value,
                "patient": _patient_json(patient) if patient else None,
                "procedure": to_json(ev.procedure.attrs),
                "steps": [to_json(s.attrs) for s in ev.procedure.steps],
            })
        elif isinstance(ev, PatientUpdate):
            out.append({"event": "patient_update", "patient": _patient_json(ev.patient)})
        elif isinstance(ev, PatientMerge):
            out.append({"event": "patient_merge", "patient": _patient_json(ev.surviving),
                        "prior": {"PatientID": ev.prior.patient_id,
                                  "IssuerOfPatientID": ev.prior.issuer}})
        elif isinstance(ev, PatientIdChange):
            out.append({"event": "patient_id_change", "patient": _patient_json(ev.patient),
                        "old": {"PatientID": ev.old.patient_id,
                                "IssuerOfPatientID": ev.old.issuer}})
    return out


def _patient_json(patient: Any) -> dict[str, Any]:
    from broker.dicom.dataset import to_json

    attrs = {"PatientID": patient.key.patient_id, **patient.attrs}
    if patient.key.issuer:
        attrs["IssuerOfPatientID"] = patient.key.issuer
    return to_json(attrs)
