"""Modality Worklist C-FIND: identifier → WorklistQuery, stored step → response identifier.

Matching follows PS3.4 C.2.2.2 and Annex K: single value, universal (empty or ``*``),
wildcards only for the VRs that allow them, DA/TM/DT ranges (SPS Start Date and Time
combined), UID lists; the PN policy is in broker/model/worklist.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_dict, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from broker.dicom.status import IDENTIFIER_DOES_NOT_MATCH, UNABLE_TO_PROCESS, DimseFailure
from broker.model.orders import Attrs
from broker.model.worklist import Match, WorklistQuery
from broker.store.worklist_query import MATCHABLE, STATION, WorklistRow

SPS_SEQUENCE = "ScheduledProcedureStepSequence"
WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
RANGE_VRS = frozenset({"DA", "TM", "DT"})
_DA = re.compile(r"^\d{8}$")
_TM = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_DT = re.compile(r"^\d{4,14}(\.\d{1,6})?([+-]\d{4})?$")
SPECIFIC_CHARACTER_SET = Tag(0x0008, 0x0005)


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """Caps on each matching value: its length (each UID of a UID list on its own), its
    number of wildcards (``*`` and ``?``) and the number of UIDs of a list;
    ``dicom.max_query_value_length``, ``dicom.max_query_wildcards``, ``dicom.max_query_uids``."""

    max_value_length: int = 256
    max_wildcards: int = 16
    max_uids: int = 1000


class QueryLimitError(DimseFailure):
    """A matching value over a cap (C000): logged with its length, never with its value."""

    def __init__(self, keyword: str, what: str, count: int, limit: int, setting: str) -> None:
        super().__init__(UNABLE_TO_PROCESS, f"{keyword}: {count} {what} (limit {limit})")
        self.keyword, self.count, self.limit, self.setting = keyword, count, limit, setting


@dataclass(slots=True)
class ReturnKey:
    tag: BaseTag
    keyword: str
    vr: str
    items: list[ReturnKey] | None = None  # sub-keys of a sequence; [] = every stored one


@dataclass(slots=True)
class ParsedQuery:
    query: WorklistQuery
    keys: list[ReturnKey]
    unsupported: list[str] = field(default_factory=list)
    limits: QueryLimits = QueryLimits()
    matchable: frozenset[str] = MATCHABLE
    #: set when the worklist SCP keeps this parse (its responses are kept under it): 0 else
    serial: int = 0


def parse_identifier(identifier: Dataset, station_from_caller: str = "",
                     limits: QueryLimits = QueryLimits()) -> ParsedQuery:
    """Matching keys and return keys of a C-FIND identifier.

    ``station_from_caller`` is used as the Scheduled Station AE Title when the query gives
    none (the per-calling-AE option "calling AE is the station"). A matching value over
    ``limits`` raises QueryLimitError.
    """
    query = WorklistQuery()
    parsed = ParsedQuery(query, [], limits=limits)
    for elem in identifier:
        if elem.tag == SPECIFIC_CHARACTER_SET or elem.tag.element == 0:
            continue
        if elem.keyword == SPS_SEQUENCE:
            parsed.keys.append(_sps_key(elem, parsed))
            continue
        parsed.keys.append(_return_key(elem))
        _add_match(elem, parsed)
    if station_from_caller and STATION not in query.keywords():
        query.matches.append(Match(STATION, "single", station_from_caller))
    return parsed


def _return_key(elem: DataElement) -> ReturnKey:
    vr = elem.VR
    if vr == "SQ":
        items = elem.value
        if len(items) > 1:
            raise DimseFailure(IDENTIFIER_DOES_NOT_MATCH,
                               f"{elem.keyword or elem.tag} has more than one item")
        sub = [_return_key(e) for e in items[0]] if items else []
        return ReturnKey(elem.tag, elem.keyword, vr, sub)
    return ReturnKey(elem.tag, elem.keyword, vr)


def _sps_key(elem: DataElement, parsed: ParsedQuery) -> ReturnKey:
    if elem.VR != "SQ":
        raise DimseFailure(IDENTIFIER_DOES_NOT_MATCH,
                           "Scheduled Procedure Step Sequence is not a sequence")
    items = elem.value
    if len(items) > 1:
        raise DimseFailure(IDENTIFIER_DOES_NOT_MATCH,
                           "Scheduled Procedure Step Sequence has more than one item")
    sub: list[ReturnKey] = []
    for inner in items[0] if items else []:
        if inner.tag == SPECIFIC_CHARACTER_SET or inner.tag.element == 0:
            continue
        sub.append(_return_key(inner))
        _add_match(inner, parsed)
    return ReturnKey(elem.tag, SPS_SEQUENCE, "SQ", sub)


def _text(elem: DataElement) -> str:
    value = elem.value
    if value is None:
        return ""
    if elem.VR == "PN":
        return str(value)
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _add_match(elem: DataElement, parsed: ParsedQuery) -> None:
    if elem.VR == "SQ":  # sequence matching (other than the SPS sequence) is not offered
        if elem.value and any(_text(e) for e in elem.value[0]):
            parsed.unsupported.append(elem.keyword or str(elem.tag))
        return
    value = _text(elem).strip()
    if not value or (value == "*" and elem.VR in WILDCARD_VRS):
        return
    if elem.VR == "UI" and not value.replace("\\", "").strip():
        return  # a list of empty UIDs: universal matching
    keyword = elem.keyword
    if keyword not in parsed.matchable:
        parsed.unsupported.append(keyword or str(elem.tag))
        return
    if elem.VR != "UI" and elem.VM > 1:  # only a UID key may hold a list (PS3.4 C.2.2.2.2)
        raise DimseFailure(UNABLE_TO_PROCESS, f"{keyword}: {elem.VM} values "
                           "(single value matching takes one value)")
    _check_limits(keyword, elem.VR, value, parsed.limits)
    parsed.query.matches.append(_match(keyword, elem.VR, value))
    if keyword == "ScheduledProcedureStepStatus":
        parsed.query.include_hidden = True


def _check_limits(keyword: str, vr: str, value: str, limits: QueryLimits) -> None:
    if vr == "UI" and (uids := value.count("\\") + 1) > limits.max_uids:
        raise QueryLimitError(keyword, "UIDs", uids, limits.max_uids, "dicom.max_query_uids")
    longest = max(map(len, value.split("\\"))) if vr == "UI" else len(value)
    if longest > limits.max_value_length:
        raise QueryLimitError(keyword, "characters", longest, limits.max_value_length,
                              "dicom.max_query_value_length")
    if vr in WILDCARD_VRS:
        wildcards = value.count("*") + value.count("?")
        if wildcards > limits.max_wildcards:
            raise QueryLimitError(keyword, "wildcards", wildcards, limits.max_wildcards,
                                  "dicom.max_query_wildcards")


def _match(keyword: str, vr: str, value: str) -> Match:
    if vr == "UI":
        values = tuple(v.strip() for v in value.split("\\") if v.strip())
        return Match(keyword, "list", values=values) if len(values) > 1 else Match(
            keyword, "single", values[0])
    if vr in RANGE_VRS:
        return _range(keyword, vr, value)
    if vr in WILDCARD_VRS and ("*" in value or "?" in value):
        return Match(keyword, "wildcard", value)
    return Match(keyword, "single", value)


def _range(keyword: str, vr: str, value: str) -> Match:
    pattern = {"DA": _DA, "TM": _TM, "DT": _DT}[vr]
    if "-" in value and not (vr == "DT" and value.count("-") == 1 and _DT.match(value)):
        low, _, high = value.partition("-")
        low, high = low.strip(), high.strip()
        for part in (low, high):
            if part and not pattern.match(part):
                raise DimseFailure(UNABLE_TO_PROCESS, f"{keyword}: {value!r} is not a {vr} range")
        if not low and not high:
            raise DimseFailure(UNABLE_TO_PROCESS, f"{keyword}: {value!r} is an empty range")
        return Match(keyword, "range", low=low, high=high)
    if not pattern.match(value):
        raise DimseFailure(UNABLE_TO_PROCESS, f"{keyword}: {value!r} is not a valid {vr} value")
    return Match(keyword, "single", value)


# -- responses ------------------------------------------------------------------------------

#: one response element: (tag, VR, value); a sequence's value is a list of items (node lists)
Node = tuple[int, str, Any]


def response_nodes(row: WorklistRow, keys: list[ReturnKey],
                   encode_name: Callable[[str], str] | None = None) -> list[Node]:
    """Exactly the requested keys (unknown ones empty), sorted by tag, without the charset."""
    top = (row.patient, row.procedure, row.step)
    nodes: list[Node] = []
    for key in keys:
        if key.keyword == SPS_SEQUENCE:
            item = _nodes(key.items or [], (row.step,), encode_name) if key.items else \
                _all_nodes(row.step, encode_name)
            nodes.append((int(key.tag), "SQ", [item]))
        else:
            nodes.extend(_nodes([key], top, encode_name))
    nodes.sort(key=lambda n: n[0])
    return nodes


def _lookup(keyword: str, sources: tuple[Attrs, ...]) -> Any:
    for source in sources:
        if keyword in source:
            return source[keyword]
    return None


def _nodes(keys: list[ReturnKey], sources: tuple[Attrs, ...],
           encode_name: Callable[[str], str] | None) -> list[Node]:
    out: list[Node] = []
    for key in keys:
        value = _lookup(key.keyword, sources) if key.keyword else None
        if key.vr == "SQ":
            items = [(_nodes(key.items, (stored,), encode_name) if key.items
                      else _all_nodes(stored, encode_name))
                     for stored in (value if isinstance(value, list) else [])
                     if isinstance(stored, dict)]
            out.append((int(key.tag), "SQ", items))
        else:
            out.append(_node(int(key.tag), key.vr, value, encode_name))
    out.sort(key=lambda n: n[0])
    return out


def _all_nodes(stored: Attrs, encode_name: Callable[[str], str] | None) -> list[Node]:
    out: list[Node] = []
    for keyword, value in stored.items():
        tag = keyword_dict.get(keyword)
        if tag is None or (keyword == "ScheduledStationAETitle" and not value):
            continue
        vr = dictionary_VR(tag)
        if vr == "SQ":
            out.append((int(tag), "SQ", [_all_nodes(v, encode_name) for v in value
                                         if isinstance(v, dict)]))
        else:
            out.append(_node(int(tag), vr, value, encode_name))
    out.sort(key=lambda n: n[0])
    return out


def _node(tag: int, vr: str, value: Any, encode_name: Callable[[str], str] | None) -> Node:
    if value is None or value == "" or value == []:
        return (tag, vr, None)
    if vr == "PN" and encode_name is not None:
        value = encode_name(str(value)) if not isinstance(value, list) else [
            encode_name(str(v)) for v in value]
    if vr in BINARY_INTEGERS:
        try:
            return (tag, vr, int(value))
        except (TypeError, ValueError):
            return (tag, vr, None)
    if isinstance(value, list):
        return (tag, vr, [str(v) for v in value])
    return (tag, vr, str(value))


BINARY_INTEGERS = {"US": "<H", "SS": "<h", "UL": "<I", "SL": "<i"}


def to_pydicom(nodes: list[Node], charset: str) -> Dataset:
    """The response as a pydicom Dataset (what the fast encoder's bytes must decode to)."""
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    _add(ds, nodes)
    return ds


def _add(ds: Dataset, nodes: list[Node]) -> None:
    for tag, vr, value in nodes:
        if vr == "SQ":
            items = []
            for item_nodes in value:
                item = Dataset()
                _add(item, item_nodes)
                items.append(item)
            ds.add(DataElement(tag, "SQ", Sequence(items)))
        else:
            ds.add(DataElement(tag, vr, value))


def build_response(row: WorklistRow, keys: list[ReturnKey], charset: str,
                   encode_name: Callable[[str], str] | None = None) -> Dataset:
    """Exactly the requested keys (plus Specific Character Set); unknown ones empty."""
    return to_pydicom(response_nodes(row, keys, encode_name), charset)


def nodes_of(keys: list[ReturnKey], attrs: Attrs,
             encode_name: Callable[[str], str] | None = None) -> list[Node]:
    """Exactly the requested keys of one flat set of attributes (a workitem), sorted by tag;
    no keys: every attribute."""
    return _nodes(keys, (attrs,), encode_name) if keys else _all_nodes(attrs, encode_name)


def return_key(elem: DataElement) -> ReturnKey:
    """A return key (its sub-keys for a sequence) of one identifier element."""
    return _return_key(elem)


def add_match(elem: DataElement, parsed: ParsedQuery) -> None:
    """The matching key of one identifier element (none for a universal value), with the
    same rules and caps as the worklist's; sequences are not matched here."""
    _add_match(elem, parsed)


def keyword_of(tag: BaseTag) -> str:
    return keyword_for_tag(tag) or str(tag)
