"""Why a step is, or is not, in a station's worklist answer.

Nothing here restates a matching rule: the query is run through the SCP's own SQL (the
worklist reader's ``search``) restricted to the one step, first whole, then one matching key
at a time (SPS start date and time together, as the SCP matches them), then with no key at
all to test the status filter. A key whose query alone leaves the step out is a reason it is
excluded; the words only describe the stored and the asked values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from broker.dicom.worklist_matching import WorklistMatching, latin1_name
from broker.model.worklist import Match, WorklistQuery
from broker.store.worklist_query import START_DATE, START_TIME, STATION, WorklistRow

Search = Callable[[WorklistQuery], Iterator[WorklistRow]]
#: patient ID → the patient ID it was merged into (ADT^A40), for the IDs a query asked for
Merges = dict[str, str]

STATUS_WORDS = {
    "STARTED": "the step is STARTED: a modality began it (MPPS IN PROGRESS)",
    "COMPLETED": "the step is COMPLETED: a modality finished it (MPPS COMPLETED)",
    "DISCONTINUED": "the step is DISCONTINUED: the modality stopped it (MPPS DISCONTINUED)",
    "CANCELED": "the order was cancelled: the step is CANCELED (order control CA, DC or "
                "an update that left this step out)",
}
LABELS = {
    "PatientID": "patient ID", "PatientName": "patient name", "AccessionNumber":
    "accession number", "Modality": "modality", "ScheduledStationAETitle": "station AE title",
    "ScheduledProcedureStepStartDate": "scheduled date", "ScheduledProcedureStepID":
    "step ID", "ScheduledProcedureStepStatus": "step status", "RequestedProcedureID":
    "requested procedure ID", "StudyInstanceUID": "Study Instance UID",
    "ScheduledStationName": "station name", "ScheduledProcedureStepLocation": "location",
    "ScheduledPerformingPhysicianName": "performing physician", "PatientBirthDate":
    "birth date", "PatientSex": "sex", "IssuerOfPatientID": "issuer of the patient ID",
    "ReferringPhysicianName": "referring physician", "RequestingPhysician":
    "requesting physician", "AdmissionID": "admission ID",
}


@dataclass
class Exclusion:
    """One matching key (or the status filter: ``keyword`` "status") that leaves the step out."""

    keyword: str
    asked: str
    stored: str
    reason: str


@dataclass
class Verdict:
    step_id: int
    sps_id: str
    status: str
    study_uid: str
    accession: str
    returned: bool
    exclusions: list[Exclusion] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        if self.returned:
            return "returned" + (f" ({'; '.join(self.notes)})" if self.notes else "")
        return "not returned: " + "; ".join(e.reason for e in self.exclusions)


def key_groups(query: WorklistQuery) -> list[list[Match]]:
    """The query's matching keys as the SQL applies them: start date and time as one."""
    groups: list[list[Match]] = []
    date_time = [m for m in query.matches if m.keyword in (START_DATE, START_TIME)]
    has_date = any(m.keyword == START_DATE for m in date_time)
    for m in query.matches:
        if m.keyword in (START_DATE, START_TIME) and has_date:
            continue
        groups.append([m])
    if has_date:
        groups.append(date_time)
    return groups


def returns(search: Search, query: WorklistQuery, step_id: int) -> bool:
    """Whether the SCP's SQL for ``query`` returns the step ``step_id``."""
    only = dataclasses.replace(query, matches=list(query.matches), step_ids=(step_id,))
    return any(row.step_id == step_id for row in search(only))


def stored_row(search: Search, step_id: int) -> WorklistRow | None:
    """The step as the SCP reads it (any status)."""
    return next(iter(search(WorklistQuery(include_hidden=True, step_ids=(step_id,)))), None)


def explain(search: Search, query: WorklistQuery, step_id: int, matching: WorklistMatching,
            calling_ae: str, merges: Merges | None = None) -> Verdict:
    """Whether ``query`` (as the SCP parsed it for ``calling_ae``) returns the step, and
    if not, every key that excludes it; ``merges`` names merged patient IDs."""
    row = stored_row(search, step_id)
    if row is None:
        raise LookupError(f"no scheduled step {step_id}")
    verdict = Verdict(step_id, _text(row.step.get("ScheduledProcedureStepID")),
                      _text(row.step.get("ScheduledProcedureStepStatus")),
                      _text(row.procedure.get("StudyInstanceUID")),
                      _text(row.procedure.get("AccessionNumber")),
                      returns(search, query, step_id))
    if verdict.returned:
        verdict.notes = _notes(row, matching, calling_ae)
        return verdict
    for group in key_groups(query):
        alone = WorklistQuery(matches=group, include_hidden=True)
        if not returns(search, alone, step_id):
            verdict.exclusions.append(_exclusion(group, row, merges or {}))
    if not query.include_hidden and not returns(search, WorklistQuery(), step_id):
        status = verdict.status
        verdict.exclusions.append(Exclusion(
            "status", "", status, STATUS_WORDS.get(status, f"the step is {status}")
            + "; a worklist query shows it only when it asks for SPS Status"))
    return verdict


def _exclusion(group: list[Match], row: WorklistRow, merges: Merges) -> Exclusion:
    keyword = group[0].keyword
    asked = " ".join(m.text for m in group)
    if keyword in (START_DATE, START_TIME):
        stored = " ".join(filter(None, (_stored(row, START_DATE), _stored(row, START_TIME))))
        return Exclusion("ScheduledProcedureStepStartDate", asked, stored,
                         f"the step is scheduled for {_when(row) or 'no date'}, outside "
                         f"the query's date/time {_asked_when(group)}")
    stored = _stored(row, keyword)
    label = LABELS.get(keyword, keyword)
    if keyword == "PatientID" and asked in merges:
        reason = (f"patient ID {asked} was merged into {merges[asked]} (ADT merge): the step "
                  f"is under {merges[asked]} now")
    elif keyword == STATION:
        reason = (f"the step is scheduled on station {stored or '(none)'}, the query asked "
                  f"for {asked}")
    elif keyword == "ScheduledProcedureStepStatus":
        reason = f"the step is {stored}, the query asked for {asked}"
    elif keyword in ("PatientName", "ReferringPhysicianName", "RequestingPhysician",
                     "ScheduledPerformingPhysicianName"):
        reason = (f"the {label} {stored or '(empty)'} does not match {asked} (names match "
                  "without regard to case, component by component; * and ? are wildcards)")
    else:
        reason = f"the {label} is {stored or '(empty)'}, the query asked for {asked}"
    return Exclusion(keyword, asked, stored, reason)


def _notes(row: WorklistRow, matching: WorklistMatching, calling_ae: str) -> list[str]:
    """What a returned step shows differently from what is stored."""
    notes = []
    name = _text(row.patient.get("PatientName"))
    charset = matching.charset(calling_ae)
    if name and matching.encode_name(calling_ae) is latin1_name and latin1_name(name) != name:
        notes.append(f"the patient name has characters {charset} cannot hold: the modality "
                     f"shows {latin1_name(name)!r} (dicom.calling_aes[].charset)")
    return notes


def _stored(row: WorklistRow, keyword: str) -> str:
    for source in (row.step, row.procedure, row.patient):
        if keyword in source:
            return _text(source[keyword])
    return ""


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "\\".join(map(str, value))
    return "" if value is None else str(value)


def _when(row: WorklistRow) -> str:
    date, time = _stored(row, START_DATE), _stored(row, START_TIME)
    if not date:
        return ""
    out = f"{date[:4]}-{date[4:6]}-{date[6:8]}"
    return out + (f" {time[:2]}:{time[2:4]}" if len(time) >= 4 else "")


def _asked_when(group: list[Match]) -> str:
    parts = []
    for m in group:
        what = "date" if m.keyword == START_DATE else "time"
        parts.append(f"{what} {m.text}")
    return ", ".join(parts)
