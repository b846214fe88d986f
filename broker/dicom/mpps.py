"""Modality Performed Procedure Step SCP (PS3.4 Annex F): checks and dataset merging."""

from __future__ import annotations

from typing import Any

from pydicom.datadict import keyword_dict
from pydicom.dataset import Dataset

from broker.dicom.fastjson import to_json
from broker.model.errors import DomainError, ErrorKind
from broker.model.uid import is_uid
from broker.workflow.mpps import FINAL_PPS, IN_PROGRESS, PPS_STATUSES, Merge, StepReference

#: Type 1 attributes of an N-CREATE (Table F.7.2-1): present and not empty
REQUIRED_ON_CREATE = ("ScheduledStepAttributesSequence", "PerformedProcedureStepID",
                      "PerformedStationAETitle", "PerformedProcedureStepStartDate",
                      "PerformedProcedureStepStartTime", "PerformedProcedureStepStatus",
                      "Modality")
MISSING, EMPTY, INVALID = (ErrorKind.MISSING_ATTRIBUTE, ErrorKind.MISSING_VALUE,
                           ErrorKind.INVALID_VALUE)


def _tag(keyword: str) -> str:
    return f"{keyword_dict[keyword]:08X}"


def _require(stored: dict[str, Any], keywords: tuple[str, ...]) -> None:
    for keyword in keywords:
        element = stored.get(_tag(keyword))
        if element is None:
            raise DomainError(MISSING, f"{keyword} {_where(keyword)} is missing")
        if element.get("vr") != "SQ" and not _json_text(stored, keyword):
            raise DomainError(EMPTY, f"{keyword} {_where(keyword)} has no value")


def _where(keyword: str) -> str:
    tag = keyword_dict[keyword]
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def step_references(stored: dict[str, Any]) -> list[StepReference]:
    """The Scheduled Step Attributes Sequence (DICOM JSON), each Study Instance UID checked."""
    items = _json_items(stored, "ScheduledStepAttributesSequence")
    if not items:
        raise DomainError(EMPTY, "ScheduledStepAttributesSequence has no item")
    refs = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise DomainError(INVALID, f"ScheduledStepAttributesSequence item {number} is "
                              "not a dataset")
        uid = _json_text(item, "StudyInstanceUID")
        if not uid:
            raise DomainError(EMPTY, f"StudyInstanceUID has no value (Scheduled Step "
                              f"Attributes item {number})")
        if not is_uid(uid):
            raise DomainError(INVALID, f"StudyInstanceUID is not a UID (Scheduled Step "
                              f"Attributes item {number}): {uid[:64]!r}")
        refs.append(StepReference(uid, _json_text(item, "AccessionNumber"),
                                  _json_text(item, "RequestedProcedureID"),
                                  _json_text(item, "ScheduledProcedureStepID")))
    return refs


def check_create(stored: dict[str, Any]) -> tuple[str, list[StepReference]]:
    """The status and step references of an N-CREATE (its dataset as DICOM JSON), or
    a DomainError."""
    _require(stored, REQUIRED_ON_CREATE)
    status = _json_text(stored, "PerformedProcedureStepStatus")
    if status != IN_PROGRESS:
        raise DomainError(INVALID, f"PerformedProcedureStepStatus must be IN PROGRESS on "
                          f"N-CREATE, not {status!r}")
    return status, step_references(stored)


def as_json(ds: Dataset, raw: bytes | None = None, implicit: bool = True) -> dict[str, Any]:
    """The whole dataset as DICOM JSON (the stored form): converted straight from its
    encoding when given and possible, else by pydicom."""
    if raw is not None:
        fast = to_json(raw, implicit)
        if fast is not None:
            return fast
    return ds.to_json_dict()


def _json_text(stored: dict[str, Any], keyword: str) -> str:
    values = stored.get(_tag(keyword), {}).get("Value") or [""]
    value = values[0]
    if isinstance(value, dict):  # a person name
        value = value.get("Alphabetic", "")
    return str(value).strip()


def _json_items(stored: dict[str, Any], keyword: str) -> list[dict[str, Any]]:
    return list(stored.get(_tag(keyword), {}).get("Value") or [])


def merger(modifications: dict[str, Any], sop_instance_uid: str) -> Merge:
    """The N-SET (its modification list as DICOM JSON) as a function from the stored dataset
    to the new one, its status and its summary; the modification list replaces whole
    attributes (F.7.2.2)."""
    if _tag("ScheduledStepAttributesSequence") in modifications:
        step_references(modifications)
    changes = {tag: value for tag, value in modifications.items()
               if not tag.startswith(("0000", "0002"))}

    def merge(stored: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, Any]]:
        merged = {**stored, **changes}
        status = _json_text(merged, "PerformedProcedureStepStatus")
        if status not in PPS_STATUSES:
            raise DomainError(INVALID, f"PerformedProcedureStepStatus {status!r} is not one of "
                              + ", ".join(PPS_STATUSES))
        if status in FINAL_PPS:
            for keyword in ("PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime"):
                if not _json_text(merged, keyword):
                    raise DomainError(EMPTY, f"{keyword} is required to set the MPPS {status}")
        return dict(sorted(merged.items())), status, summary(merged, sop_instance_uid)
    return merge


def summary(stored: dict[str, Any], sop_instance_uid: str) -> dict[str, Any]:
    """What status messages say of a performed procedure step (from its DICOM JSON)."""
    series = _json_items(stored, "PerformedSeriesSequence")
    images = sum(len(_json_items(s, "ReferencedImageSequence"))
                 + len(_json_items(s, "ReferencedNonImageCompositeSOPInstanceSequence"))
                 for s in series)
    return {"start": _json_text(stored, "PerformedProcedureStepStartDate")
            + _json_text(stored, "PerformedProcedureStepStartTime").split(".")[0],
            "end": _json_text(stored, "PerformedProcedureStepEndDate")
            + _json_text(stored, "PerformedProcedureStepEndTime").split(".")[0],
            "station": _json_text(stored, "PerformedStationAETitle"),
            "status": _json_text(stored, "PerformedProcedureStepStatus"),
            "series_count": len(series), "image_count": images,
            "sop_instance_uid": sop_instance_uid, "instances": instances(series)}


def instances(series: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(SOP Instance UID, SOP Class UID, Series Instance UID) of each instance listed in the
    Performed Series Sequence items (DICOM JSON)."""
    found = []
    for item in series:
        series_uid = _json_text(item, "SeriesInstanceUID")
        for keyword in ("ReferencedImageSequence",
                        "ReferencedNonImageCompositeSOPInstanceSequence"):
            for ref in _json_items(item, keyword):
                uid = _json_text(ref, "ReferencedSOPInstanceUID")
                if uid:
                    found.append((uid, _json_text(ref, "ReferencedSOPClassUID"), series_uid))
    return found
