"""Modality Performed Procedure Step SCP (PS3.4 Annex F): checks and dataset merging."""

from __future__ import annotations

import re
from typing import Any

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


def summary(ds: Dataset, sop_instance_uid: str) -> dict[str, Any]:
    """What status messages say of a performed procedure step."""
    series = ds.get("PerformedSeriesSequence") or []
    images = sum(len(s.get("ReferencedImageSequence") or [])
                 + len(s.get("ReferencedNonImageCompositeSOPInstanceSequence") or [])
                 for s in series)
    return {"start": _text(ds, "PerformedProcedureStepStartDate")
            + _text(ds, "PerformedProcedureStepStartTime").split(".")[0],
            "end": _text(ds, "PerformedProcedureStepEndDate")
            + _text(ds, "PerformedProcedureStepEndTime").split(".")[0],
            "station": _text(ds, "PerformedStationAETitle"),
            "status": _text(ds, "PerformedProcedureStepStatus"),
            "series_count": len(series), "image_count": images,
            "sop_instance_uid": sop_instance_uid}


def as_json(ds: Dataset) -> dict[str, Any]:
    """The whole dataset as DICOM JSON (the stored form)."""
    return ds.to_json_dict()


def merger(modifications: Dataset, sop_instance_uid: str) -> Merge:
    """The N-SET as a function from the stored dataset to the new one and its status."""
    def merge(stored: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, Any]]:
        ds = Dataset.from_json(stored)
        for elem in modifications:
            if elem.tag.group not in (0x0000, 0x0002):
                ds[elem.tag] = elem
        status = _text(ds, "PerformedProcedureStepStatus")
        if status not in PPS_STATUSES:
            raise MppsError(0x0106, f"PerformedProcedureStepStatus {status!r} is not one of "
                            + ", ".join(PPS_STATUSES))
        if status in FINAL_PPS:
            for keyword in ("PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime"):
                if not _text(ds, keyword):
                    raise MppsError(0x0121, f"{keyword} is required to set the MPPS {status}")
        if "ScheduledStepAttributesSequence" in modifications:
            step_references(ds)
        return as_json(ds), status, summary(ds, sop_instance_uid)
    return merge


def failure(error: MppsError) -> Dataset:
    ds = Dataset()
    ds.Status = error.status
    ds.ErrorComment = error.comment[:64]
    if error.error_id is not None:
        ds.ErrorID = error.error_id
    return ds
