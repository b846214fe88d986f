"""QIDO-style query parameters (PS3.18 8.3.4) as a C-FIND identifier, so that UPS-RS Search
and the filter of a filtered worklist subscription are read by the UPS C-FIND SCP's own
parsing (``parse_ups_identifier``): the same matching for UPS-RS, UPS C-FIND and MWL C-FIND.

A key is a keyword or a tag (``PatientID``, ``00100020``), a sequence key names the path to
an attribute of its item (``ScheduledStationNameCodeSequence.CodeValue``,
``0040A370.00080050``); the value is the C-FIND matching value (wildcards, ranges; a UID
list separated by commas or backslashes)."""

from __future__ import annotations

from collections.abc import Iterable

from pydicom import config
from pydicom.datadict import dictionary_VR, keyword_dict
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

#: the query parameters that are not matching keys (PS3.18 Table 8.3.4-1)
CONTROL = frozenset({"includefield", "limit", "offset", "fuzzymatching"})
MAX_DEPTH = 3


class BadParameter(ValueError):
    """A query parameter that names no attribute, or a value it cannot take."""


def tag_of(name: str) -> BaseTag:
    """The tag of a keyword or of eight hex digits (a tag the dictionary knows)."""
    name = name.strip()
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        tag = Tag(int(name, 16))
    elif name in keyword_dict:
        tag = Tag(keyword_dict[name])
    else:
        raise BadParameter(f"{name[:64]!r} is neither a DICOM keyword nor a tag (ggggeeee)")
    try:
        dictionary_VR(tag)
    except KeyError:
        raise BadParameter(f"{name} is not an attribute of the DICOM dictionary") from None
    return tag


def path_of(key: str) -> list[BaseTag]:
    """The tags of a (sequence) key; each but the last is a sequence."""
    parts = key.split(".")
    if len(parts) > MAX_DEPTH:
        raise BadParameter(f"{key[:64]!r} nests more than {MAX_DEPTH} levels")
    tags = [tag_of(part) for part in parts]
    for tag, part in zip(tags[:-1], parts, strict=False):
        if dictionary_VR(tag) != "SQ":
            raise BadParameter(f"{part} in {key!r} is not a sequence")
    return tags


def identifier(matches: Iterable[tuple[str, str]], returns: Iterable[str] = ()) -> Dataset:
    """The identifier of matching keys (``key=value`` pairs) and return keys (their names,
    added empty where no matching key holds them)."""
    ds = Dataset()
    for key, value in matches:
        _put(ds, path_of(key), value, key)
    for key in returns:
        _put(ds, path_of(key), None, key)
    return ds


def _put(ds: Dataset, tags: list[BaseTag], value: str | None, key: str) -> None:
    for tag in tags[:-1]:
        if tag not in ds:
            ds.add(DataElement(tag, "SQ", Sequence([Dataset()])))
        elif not ds[tag].value:  # an empty return sequence becomes one with an item
            ds[tag].value = Sequence([Dataset()])
        ds = ds[tag].value[0]
    tag = tags[-1]
    vr = dictionary_VR(tag)
    if value is None:
        if tag not in ds:
            ds.add(DataElement(tag, vr, Sequence([]) if vr == "SQ" else None))
        return
    if vr == "SQ":
        raise BadParameter(f"{key} is a sequence: match on an attribute of its item "
                           f"({key}.Keyword=value)")
    if tag in ds and ds[tag].value not in (None, "", []):
        raise BadParameter(f"{key} is given more than once")
    text = value.strip()
    if vr == "UI":
        text = "\\".join(v.strip() for v in text.replace(",", "\\").split("\\"))
    if tag in ds:
        del ds[tag]
    # the C-FIND parsing judges the value (and answers 400 naming it): no pydicom warning
    converted = _value(vr, text, key)
    try:
        ds.add(DataElement(tag, vr, converted, validation_mode=config.IGNORE))
    except (ValueError, TypeError, OverflowError):  # an IS/DS pydicom cannot hold
        raise BadParameter(f"{key}: {text[:32]!r} is not a valid {vr} value") from None


def _value(vr: str, text: str, key: str) -> object:
    if vr in ("US", "SS", "UL", "SL", "UV", "SV"):
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            raise BadParameter(f"{key}: {text[:32]!r} is not a number") from None
    return text
