"""Instance Availability Notification SCP (PS3.4 Annex R): checking an IAN N-CREATE and
reading what it says of each instance."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from broker.dicom.status import (
    INVALID_ATTRIBUTE_VALUE,
    MISSING_ATTRIBUTE,
    MISSING_ATTRIBUTE_VALUE,
    DimseFailure,
)
from broker.model.uid import is_uid

AVAILABILITY = ("ONLINE", "NEARLINE", "OFFLINE", "UNAVAILABLE")


@dataclass(frozen=True, slots=True)
class AvailableInstance:
    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    availability: str
    retrieve_ae: str


@dataclass(slots=True)
class Notification:
    study_uid: str
    mpps_uids: list[str] = field(default_factory=list)
    accession: str = ""
    instances: list[AvailableInstance] = field(default_factory=list)


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _required(ds: Dataset, keyword: str, where: str, uid: bool = False) -> str:
    if keyword not in ds:
        raise DimseFailure(MISSING_ATTRIBUTE, f"{keyword} is missing{where}")
    value = _text(ds, keyword)
    if not value:
        raise DimseFailure(MISSING_ATTRIBUTE_VALUE, f"{keyword} has no value{where}")
    if uid and not is_uid(value):
        raise DimseFailure(INVALID_ATTRIBUTE_VALUE,
                           f"{keyword} is not a UID{where}: {value[:64]!r}")
    return value


def _items(ds: Dataset, keyword: str, where: str, required: bool) -> list[Dataset]:
    if keyword not in ds:
        if required:
            raise DimseFailure(MISSING_ATTRIBUTE, f"{keyword} is missing{where}")
        return []
    items = list(ds.get(keyword) or [])
    if required and not items:
        raise DimseFailure(MISSING_ATTRIBUTE_VALUE, f"{keyword} has no item{where}")
    for n, item in enumerate(items, start=1):
        if not isinstance(item, Dataset):
            raise DimseFailure(INVALID_ATTRIBUTE_VALUE,
                               f"{keyword} item {n} is not a dataset{where}")
    return items


def parse(ds: Dataset) -> Notification:
    """The notification, or DimseFailure with the status to answer."""
    study = _required(ds, "StudyInstanceUID", "", uid=True)
    if "ReferencedPerformedProcedureStepSequence" not in ds:  # Type 2: present, may be empty
        raise DimseFailure(MISSING_ATTRIBUTE, "ReferencedPerformedProcedureStepSequence is missing")
    notification = Notification(study, accession=_text(ds, "AccessionNumber"))
    for n, item in enumerate(_items(ds, "ReferencedPerformedProcedureStepSequence", "",
                                    False), start=1):
        notification.mpps_uids.append(_required(
            item, "ReferencedSOPInstanceUID",
            f" (Referenced Performed Procedure Step item {n})", uid=True))
    for s, series in enumerate(_items(ds, "ReferencedSeriesSequence", "", True), start=1):
        series_uid = _required(series, "SeriesInstanceUID",
                               f" (Referenced Series item {s})", uid=True)
        for i, item in enumerate(_items(series, "ReferencedSOPSequence",
                                        f" (Referenced Series item {s})", True), start=1):
            where = f" (Referenced Series item {s}, Referenced SOP item {i})"
            availability = _required(item, "InstanceAvailability", where).upper()
            if availability not in AVAILABILITY:
                raise DimseFailure(INVALID_ATTRIBUTE_VALUE,
                                   f"InstanceAvailability {availability!r} is not one of "
                                   f"{', '.join(AVAILABILITY)}{where}")
            notification.instances.append(AvailableInstance(
                _required(item, "ReferencedSOPInstanceUID", where, uid=True),
                _required(item, "ReferencedSOPClassUID", where, uid=True),
                series_uid, availability, _text(item, "RetrieveAETitle")))
    return notification
