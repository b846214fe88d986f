"""Workitem attributes as DICOM JSON (PS3.18 Annex F, ``application/dicom+json``) and back:
the payloads of UPS-RS and the event reports of its WebSocket channel."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset

from broker.dicom.encoder import encode
from broker.dicom.fastjson import to_json as fast_json
from broker.dicom.mwl import SPECIFIC_CHARACTER_SET, ReturnKey, nodes_of, to_pydicom
from broker.dicom.workitem import attrs_of
from broker.model.orders import Attrs
from broker.model.ups import EVENT

MEDIA_TYPE = "application/dicom+json"
JsonDataset = dict[str, Any]


class BadPayload(ValueError):
    """A request body that is not one DICOM JSON dataset; the text says what is wrong."""


def dataset_of(data: Any) -> Dataset:
    """One DICOM JSON dataset (an object, or an array holding one) as a pydicom Dataset."""
    if isinstance(data, list):
        if len(data) != 1:
            raise BadPayload(f"the body holds {len(data)} datasets: give one")
        data = data[0]
    if not isinstance(data, dict):
        raise BadPayload("the body is not a DICOM JSON dataset (an object of tags)")
    try:
        return Dataset.from_json(data)
    except Exception as exc:  # pydicom raises many kinds on malformed JSON models
        raise BadPayload(f"the body is not valid DICOM JSON: {exc}") from None


def attrs_from_json(data: Any) -> Attrs:
    """One DICOM JSON dataset as attributes by keyword (as ``attrs_of`` a DIMSE dataset)."""
    ds = dataset_of(data)
    try:
        return attrs_of(ds)
    except Exception as exc:  # a value pydicom cannot convert (a bad DA, IS …)
        raise BadPayload(f"the body has a value that cannot be read: {exc}") from None


def to_json(attrs: Attrs, charset: str, keys: list[ReturnKey] | None = None) -> JsonDataset:
    """Attributes (exactly ``keys`` when given, else all) as a DICOM JSON dataset; JSON is
    UTF-8 text, so Specific Character Set is left out. Encoded by the worklist's encoder
    and read back by broker.dicom.fastjson where both can (pydicom otherwise)."""
    nodes = nodes_of(keys or [], attrs)
    fast = fast_json(encode(nodes, "ISO_IR 192", False), False)
    if fast is not None:
        fast.pop("00080005", None)
        return fast
    ds = to_pydicom(nodes, charset)
    if SPECIFIC_CHARACTER_SET in ds:
        del ds[SPECIFIC_CHARACTER_SET]
    return ds.to_json_dict()


def event_report(event_type: int, uid: str, info: Attrs, charset: str) -> JsonDataset:
    """A UPS event report as the WebSocket's text message (PS3.18 11.13 and 8.10.5): the
    Event Information with Affected SOP Class and Instance UID and Event Type ID."""
    ds = to_pydicom(nodes_of([], info), charset)
    if SPECIFIC_CHARACTER_SET in ds:
        del ds[SPECIFIC_CHARACTER_SET]
    ds.AffectedSOPClassUID = EVENT
    ds.AffectedSOPInstanceUID = uid
    ds.EventTypeID = int(event_type)
    return ds.to_json_dict()
