"""What a workitem keeps and reports: the Event Information of each report type, the
cancellation kept in its progress sequence, an N-SET's new scheduling of its step, the
instances its performance lists (pure functions over attributes by keyword)."""

from __future__ import annotations

import time
from typing import Any

from broker.dicom.workitem import workitem_attrs
from broker.model.orders import Attrs
from broker.model.ups import EventType, UpsState, state_of
from broker.store.ups import Workitem

#: what an N-SET changes in the step itself (the worklist's scheduling; the station codes
#: are also kept as given, with their schemes and meanings)
SCHEDULING = frozenset({"ScheduledStationNameCodeSequence",
                        "ScheduledProcedureStepStartDateTime", "ProcedureStepLabel"})
#: what the RIS's order holds: an N-SET may not change it
RIS_OWNED = frozenset({"PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
                       "PatientSex", "StudyInstanceUID", "ReferencedRequestSequence"})
#: what an N-SET changes that makes an Assigned report (event type 5)
ASSIGNMENT = frozenset({"ScheduledStationNameCodeSequence", "ScheduledHumanPerformersSequence",
                        "ScheduledStationClassCodeSequence",
                        "ScheduledStationGeographicLocationCodeSequence"})


def output_instances(items: list[Any]) -> list[tuple[str, str, str]]:
    """(SOP Instance UID, SOP Class UID, Series Instance UID) of each instance of an Output
    Information Sequence (Referenced Instances and Access Macro)."""
    found = []
    for series in items if isinstance(items, list) else []:
        if not isinstance(series, dict):
            continue
        for ref in series.get("ReferencedSOPSequence") or []:
            if isinstance(ref, dict) and ref.get("ReferencedSOPInstanceUID"):
                found.append((str(ref["ReferencedSOPInstanceUID"]),
                              str(ref.get("ReferencedSOPClassUID", "")),
                              str(series.get("SeriesInstanceUID", ""))))
    return found


def step_changes(step: Attrs, changes: Attrs) -> Attrs:
    """The step's attributes with an N-SET's new scheduling: stations (the station codes'
    values), start date and time, description (the Procedure Step Label)."""
    out = dict(step)
    codes = changes.get("ScheduledStationNameCodeSequence")
    if isinstance(codes, list):
        stations = [str(c.get("CodeValue")) for c in codes
                    if isinstance(c, dict) and c.get("CodeValue")]
        if stations:
            out["ScheduledStationAETitle"] = stations if len(stations) > 1 else stations[0]
        else:
            out.pop("ScheduledStationAETitle", None)
    start = str(changes.get("ScheduledProcedureStepStartDateTime") or "")
    if start:
        out["ScheduledProcedureStepStartDate"] = start[:8]
        out["ScheduledProcedureStepStartTime"] = start[8:14]
    if changes.get("ProcedureStepLabel"):
        out["ScheduledProcedureStepDescription"] = str(changes["ProcedureStepLabel"])[:64]
    return out


def with_cancellation(own: Attrs, reason: str, contact: Attrs, at: float | None) -> Attrs:
    """The workitem's Procedure Step Progress Information Sequence with the cancellation:
    when (``at``, once canceled), why, and whom to contact (PS3.4 CC.2.5.1.3)."""
    progress = own.get("ProcedureStepProgressInformationSequence") or [{}]
    item = dict(progress[0]) if isinstance(progress, list) and progress and isinstance(
        progress[0], dict) else {}
    if at is not None:
        item["ProcedureStepCancellationDateTime"] = time.strftime("%Y%m%d%H%M%S",
                                                                  time.localtime(at))
    if reason:
        item["ReasonForCancellation"] = reason[:1024]
    uri, name = contact.get("ContactURI"), contact.get("ContactDisplayName")
    if uri or name:
        item["ProcedureStepCommunicationsURISequence"] = [
            {k: v for k, v in (("ContactURI", uri), ("ContactDisplayName", name)) if v}]
    return {**own, "ProcedureStepProgressInformationSequence": [item]}


def event_info(kind: EventType, item: Workitem) -> Attrs:
    """The Event Information of a report (PS3.4 Table CC.2.4-2)."""
    state = state_of(item.status.value)
    if kind is EventType.STATE_REPORT:
        out: Attrs = {"ProcedureStepState": state.value, "InputReadinessState": "READY"}
        if state is UpsState.CANCELED and item.cancel_reason:
            out["ReasonForCancellation"] = item.cancel_reason
        return out
    if kind is EventType.CANCEL_REQUESTED:
        return {"InputReadinessState": "READY"}
    if kind is EventType.PROGRESS_REPORT:
        progress = (item.attrs or {}).get("ProcedureStepProgressInformationSequence") or []
        return {"ProcedureStepProgressInformationSequence": progress}
    if kind is EventType.ASSIGNED:
        attrs = workitem_attrs(item.uid, state, item.patient, item.procedure, item.step,
                               item.attrs)
        return {k: attrs[k] for k in ("ScheduledStationNameCodeSequence",
                                      "ScheduledHumanPerformersSequence",
                                      "InputReadinessState") if k in attrs}
    return {}


def summary_of(item: Workitem, calling_ae: str, ris_status: dict[UpsState, str]
               ) -> dict[str, Any]:
    """What the RIS's status message says of a workitem's performance (as of an MPPS): its
    times, station, and the instances of the Output Information Sequence."""
    own = item.attrs or {}
    items = own.get("UnifiedProcedureStepPerformedProcedureSequence") or []
    done = items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}
    instances = output_instances(done.get("OutputInformationSequence")
                                 or own.get("OutputInformationSequence") or [])
    return {"start": str(done.get("PerformedProcedureStepStartDateTime", ""))[:14],
            "end": str(done.get("PerformedProcedureStepEndDateTime", ""))[:14],
            "station": item.performer or calling_ae, "status": ris_status.get(
                item.state, ""), "series_count": len({i[2] for i in instances}),
            "image_count": len(instances), "sop_instance_uid": item.uid,
            "instances": instances}
