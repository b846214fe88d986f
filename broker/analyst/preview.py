"""What a station sees now: a recorded (or edited) query run through the SCP's own matching
and response code, answers as the modality would get them."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_dict
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom.dsutils import decode

from broker.dicom.mwl import SPS_SEQUENCE, ParsedQuery, response_nodes, to_pydicom
from broker.dicom.worklist_matching import WorklistMatching
from broker.model.worklist import WorklistQuery
from broker.store.worklist_query import WorklistRow

Search = Callable[[WorklistQuery], Iterator[WorklistRow]]

#: the attributes of the Scheduled Procedure Step Sequence item (PS3.4 K.6.1.2.2)
SPS_KEYS = frozenset({
    "Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime", "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription", "ScheduledProcedureStepID",
    "ScheduledProcedureStepStatus", "ScheduledStationName", "ScheduledProcedureStepLocation",
    "PreMedication", "RequestedContrastAgent", "ScheduledProtocolCodeSequence"})

#: return keys of a query written from keys alone (what a typical modality asks for)
DEFAULT_RETURN_KEYS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
    "RequestedProcedureID", "RequestedProcedureDescription", "StudyInstanceUID",
    "ReferringPhysicianName", "Modality", "ScheduledStationAETitle",
    "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime",
    "ScheduledProcedureStepDescription", "ScheduledProcedureStepID")

#: what the summary table of a preview shows of each answer
SUMMARY = ("PatientName", "PatientID", "AccessionNumber", "ScheduledProcedureStepID",
           "ScheduledProcedureStepStatus", "Modality", "ScheduledStationAETitle",
           "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime",
           "ScheduledProcedureStepDescription", "StudyInstanceUID")


class BadKey(ValueError):
    """A key of an edited query the user can correct (unknown keyword, bad value)."""


def identifier_of(raw: bytes, transfer_syntax: str) -> Dataset:
    """A recorded identifier (its bytes as received) as a Dataset."""
    implicit = transfer_syntax in ("", str(ImplicitVRLittleEndian))
    big = transfer_syntax == "1.2.840.10008.1.2.2"
    ds = decode(io.BytesIO(raw), implicit, not big)
    assert ds is not None
    return ds


def identifier_from_keys(keys: dict[str, str], template: Dataset | None = None) -> Dataset:
    """An identifier with ``keys`` as matching values: set into a copy of ``template`` (the
    recorded query being edited) or into the usual return keys; Scheduled Procedure Step
    attributes go inside the SPS sequence, an empty value makes a key universal."""
    ds = Dataset()
    if template is not None:
        for elem in template:
            ds.add(elem)
        if SPS_SEQUENCE in ds and ds[SPS_SEQUENCE].value:
            item = Dataset()
            for elem in ds[SPS_SEQUENCE].value[0]:
                item.add(elem)
            ds[SPS_SEQUENCE].value = [item]
    else:
        for keyword in DEFAULT_RETURN_KEYS:
            _set(ds, keyword, "")
    for keyword, value in keys.items():
        if keyword not in keyword_dict:
            raise BadKey(f"{keyword!r} is not a DICOM keyword")
        if dictionary_VR(keyword_dict[keyword]) == "SQ":
            raise BadKey(f"{keyword} is a sequence: give its attributes instead")
        _set(ds, keyword, value.strip())
    return ds


def _set(ds: Dataset, keyword: str, value: str) -> None:
    if keyword in SPS_KEYS:
        if SPS_SEQUENCE not in ds or not ds[SPS_SEQUENCE].value:
            setattr(ds, SPS_SEQUENCE, [Dataset()])
        target = ds[SPS_SEQUENCE].value[0]
    else:
        target = ds
    setattr(target, keyword, value or None)


@dataclass
class Preview:
    calling_ae: str
    keys: dict[str, str]
    unsupported: list[str]
    items: list[dict[str, Any]] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False


def preview(search: Search, matching: WorklistMatching, identifier: Dataset, calling_ae: str,
            limit: int = 500) -> Preview:
    """The answers the SCP would give ``calling_ae`` for ``identifier`` now (at most
    ``limit``); DimseFailure when the SCP would refuse the query."""
    parsed: ParsedQuery = matching.parse(identifier, calling_ae)
    charset = matching.charset(calling_ae)
    encode_name = matching.encode_name(calling_ae)
    out = Preview(calling_ae, parsed.query.keys(), list(parsed.unsupported))
    for row in search(parsed.query):
        if len(out.items) >= limit:
            out.truncated = True
            break
        answer = to_pydicom(response_nodes(row, parsed.keys, encode_name), charset)
        out.answers.append(answer.to_json_dict())
        out.items.append({"step_id": row.step_id, **summary(row)})
    return out


def summary(row: WorklistRow) -> dict[str, Any]:
    """The summary columns of one stored step (as stored, before any response encoding)."""
    sources = (row.step, row.procedure, row.patient)
    out: dict[str, Any] = {}
    for keyword in SUMMARY:
        value = next((s[keyword] for s in sources if keyword in s), "")
        out[keyword] = "\\".join(map(str, value)) if isinstance(value, list) else value
    return out
