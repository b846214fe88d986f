"""Modality Performed Procedure Step SCP (PS3.4 Annex F): checks and dataset merging."""

from __future__ import annotations

import re
from typing import Any

from pydicom.datadict import keyword_dict
from pydicom.dataset import Dataset

from broker.workflow.mpps import (
    FINAL_PPS,
    IN_PROGRESS,
    PPS_STATUSES,
    Merge,
    MppsError,
    StepReference,
)

#: Type 1 attributes of an N-CREATE (Table F.7.2-1): present and not empty
REQUIRED_ON_CREATE = ("ScheduledStepAttributesSequence", "PerformedProcedureStepID",
                      "PerformedStationAETitle", "PerformedProcedureStepStartDate",
                      "PerformedProcedureStepStartTime", "PerformedProcedureStepStatus",
                      "Modality")
_UID = re.compile(r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))*$")


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _require(ds: Dataset, keywords: tuple[str, ...]) -> None:
    for keyword in keywords:
        if keyword not in ds:
            raise MppsError(0x0120, f"{keyword} is missing")
        if ds[keyword].VR != "SQ" and not _text(ds, keyword):
            raise MppsError(0x0121, f"{keyword} has no value")


def step_references(ds: Dataset) -> list[StepReference]:
    """The Scheduled Step Attributes Sequence, each Study Instance UID checked."""
    sequence = ds.get("ScheduledStepAttributesSequence")
    if not sequence:
        raise MppsError(0x0121, "ScheduledStepAttributesSequence has no item")
    refs = []
    for number, item in enumerate(sequence, start=1):
        if not isinstance(item, Dataset):
            raise MppsError(0x0106, f"ScheduledStepAttributesSequence item {number} is "
                            "not a dataset")
        uid = _text(item, "StudyInstanceUID")
        if not uid:
            raise MppsError(0x0121, f"StudyInstanceUID has no value (Scheduled Step "
                            f"Attributes item {number})")
        if len(uid) > 64 or not _UID.match(uid):
            raise MppsError(0x0106, f"StudyInstanceUID is not a UID (Scheduled Step "
                            f"Attributes item {number}): {uid[:64]!r}")
        refs.append(StepReference(uid, _text(item, "AccessionNumber"),
                                  _text(item, "RequestedProcedureID"),
                                  _text(item, "ScheduledProcedureStepID")))
    return refs


def check_create(ds: Dataset) -> tuple[str, list[StepReference]]:
    """The status and step references of an N-CREATE, or MppsError with the status."""
    _require(ds, REQUIRED_ON_CREATE)
    status = _text(ds, "PerformedProcedureStepStatus")
    if status != IN_PROGRESS:
        raise MppsError(0x0106, f"PerformedProcedureStepStatus must be IN PROGRESS on "
                        f"N-CREATE, not {status!r}")
    return status, step_references(ds)


def as_json(ds: Dataset) -> dict[str, Any]:
    """The whole dataset as DICOM JSON (the stored form)."""
    return ds.to_json_dict()


def _tag(keyword: str) -> str:
    return f"{keyword_dict[keyword]:08X}"


def _json_text(stored: dict[str, Any], keyword: str) -> str:
    values = stored.get(_tag(keyword), {}).get("Value") or [""]
    return str(values[0]).strip()


def _json_items(stored: dict[str, Any], keyword: str) -> list[dict[str, Any]]:
    return list(stored.get(_tag(keyword), {}).get("Value") or [])


def merger(modifications: Dataset, sop_instance_uid: str) -> Merge:
    """The N-SET as a function from the stored dataset (DICOM JSON) to the new one, its status
    and its summary; the modification list replaces whole attributes (F.7.2.2)."""
    if "ScheduledStepAttributesSequence" in modifications:
        step_references(modifications)
    changes = {tag: value for tag, value in modifications.to_json_dict().items()
               if not tag.startswith(("0000", "0002"))}

    def merge(stored: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, Any]]:
        merged = {**stored, **changes}
        status = _json_text(merged, "PerformedProcedureStepStatus")
        if status not in PPS_STATUSES:
            raise MppsError(0x0106, f"PerformedProcedureStepStatus {status!r} is not one of "
                            + ", ".join(PPS_STATUSES))
        if status in FINAL_PPS:
            for keyword in ("PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime"):
                if not _json_text(merged, keyword):
                    raise MppsError(0x0121, f"{keyword} is required to set the MPPS {status}")
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


def failure(error: MppsError) -> Dataset:
    ds = Dataset()
    ds.Status = error.status
    ds.ErrorComment = error.comment[:64]
    if error.error_id is not None:
        ds.ErrorID = error.error_id
    return ds
