"""Domain attributes (keyword → value) as pydicom Datasets and DICOM JSON."""

from __future__ import annotations

from typing import Any

from pydicom.datadict import dictionary_VR, keyword_dict
from pydicom.dataset import Dataset

from broker.model.orders import Attrs

INTEGER_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "IS"})


def to_dataset(attrs: Attrs) -> Dataset:
    ds = Dataset()
    for keyword, value in attrs.items():
        tag = keyword_dict.get(keyword)
        if tag is None:
            continue
        vr = dictionary_VR(tag)
        ds.add_new(tag, vr, _value(vr, value))
    return ds


def _value(vr: str, value: Any) -> Any:
    if vr == "SQ":
        return [to_dataset(item) for item in value] if isinstance(value, list) else []
    if vr in INTEGER_VRS and vr != "IS":
        if isinstance(value, list):
            return [int(v) for v in value if str(v).strip()]
        return int(value) if str(value).strip() else None
    if isinstance(value, list):
        return [str(v) for v in value]
    return str(value)


def to_json(attrs: Attrs) -> dict[str, Any]:
    """DICOM JSON (PS3.18 F.2) of the attributes."""
    return to_dataset(attrs).to_json_dict()
