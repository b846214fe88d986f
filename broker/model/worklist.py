"""Worklist queries in domain terms (which attribute, how matched) and the PN policy.

Neither DICOM encoding nor SQL lives here: broker/dicom/mwl.py turns a C-FIND identifier
into a WorklistQuery, broker/store/worklist_query.py turns one into SQL.

PN matching policy (stated in the conformance statement): case-insensitive (Unicode
case folding), component by component (family^given^middle^prefix^suffix; components the
query leaves out match anything), against each component group of the stored name
(alphabetic, ideographic, phonetic) — a query with '=' matches group by group. ``*`` and
``?`` are wildcards inside a component.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from broker.model.orders import StepStatus

#: shown only when the query asks for SPS Status
HIDDEN_STATUSES = (StepStatus.STARTED, StepStatus.COMPLETED, StepStatus.DISCONTINUED,
                   StepStatus.CANCELED)


@dataclass(frozen=True, slots=True)
class Match:
    """One matching key: ``kind`` is single, wildcard, range, list or name."""

    keyword: str
    kind: str
    value: str = ""
    low: str = ""
    high: str = ""
    values: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """The value as a query writes it: a range as ``low-high``, a UID list with ``\\``."""
        if self.kind == "range":
            return f"{self.low}-{self.high}"
        if self.kind == "list":
            return "\\".join(self.values)
        return self.value


@dataclass(slots=True)
class WorklistQuery:
    matches: list[Match] = field(default_factory=list)
    include_hidden: bool = False  # the query has a value for SPS Status
    step_ids: tuple[int, ...] = ()  # only these steps (row ids): the analyst's explanation
    workitems: bool = False  # also read each step's UPS workitem attributes

    def keywords(self) -> set[str]:
        return {m.keyword for m in self.matches}

    def keys(self) -> dict[str, str]:
        """Each matching key and its value as the query wrote it."""
        return {m.keyword: m.text for m in self.matches}


def name_keys(pn: str) -> set[str]:
    """Index keys of a stored name: the case-folded family name of each component group."""
    return {k for k in (g.split("^")[0].strip().casefold() for g in pn.split("=")) if k}


def literal_prefix(pattern: str) -> str:
    """The part of a wildcard pattern before its first wildcard."""
    cut = min((i for i in (pattern.find("*"), pattern.find("?")) if i >= 0), default=-1)
    return pattern if cut < 0 else pattern[:cut]


@lru_cache(maxsize=4096)
def _segments(pattern: str) -> tuple[str, ...]:
    return tuple(pattern.split("*"))


def wildcard_match(pattern: str, value: str) -> bool:
    """Whether ``value`` matches a DICOM wildcard pattern (``*`` any run, ``?`` any one
    character, everything else literal), without backtracking.

    The pattern is split on ``*``: the first and last segments are anchored at the ends of
    the value, the middle ones are placed left to right, each at its leftmost fit after the
    previous one (a leftmost fit never loses a match, so no choice is ever revisited). Each
    segment is searched once over the rest of the value, so the work is at most
    O(len(value) · len(pattern)) whatever the number of ``*`` (a ``.*`` regex backtracks
    in O(len(value) ** stars)); the searches run in C (``str.find``, or a fixed-length
    expression for a segment with ``?``).
    """
    segments = _segments(pattern)
    if len(segments) == 1:
        return len(value) == len(pattern) and _fits(pattern, value, 0)
    first, last = segments[0], segments[-1]
    end = len(value) - len(last)
    if end < len(first) or not _fits(first, value, 0) or not _fits(last, value, end):
        return False
    position = len(first)
    for segment in segments[1:-1]:
        if segment:
            found = _find(segment, value, position, end)
            if found < 0:
                return False
            position = found + len(segment)
    return True


def _fits(segment: str, value: str, at: int) -> bool:
    """``segment`` matches ``value`` at ``at`` (the caller checked the value is long enough)."""
    if "?" not in segment:
        return value.startswith(segment, at)
    return _fixed(segment).match(value, at) is not None


def _find(segment: str, value: str, start: int, stop: int) -> int:
    """The leftmost position where ``segment`` fits inside value[start:stop], or -1."""
    if "?" not in segment:
        return value.find(segment, start, stop)
    found = _fixed(segment).search(value, start, stop)
    return -1 if found is None else found.start()


@lru_cache(maxsize=4096)
def _fixed(segment: str) -> re.Pattern[str]:
    """A segment with ``?`` as a fixed-length expression: literals and ``.`` only, no
    quantifier or alternative, so each position is tried once in O(len(segment)) with
    nothing to backtrack into."""
    return re.compile("".join("." if c == "?" else re.escape(c) for c in segment), re.DOTALL)


def _components(group: str) -> list[str]:
    return [c.strip().casefold() for c in group.split("^")]


@lru_cache(maxsize=4096)
def _compiled_name_query(query: str) -> tuple[tuple[str | None, ...], ...]:
    groups = []
    for group in query.split("="):
        comps = _components(group)
        while comps and comps[-1] in ("", "*"):
            comps.pop()
        groups.append(tuple(None if c in ("", "*") else c for c in comps))
    return tuple(groups)


def pn_matches(stored: str, query: str) -> bool:
    """Whether a stored PN value matches a PN query under the policy above."""
    compiled = _compiled_name_query(query)
    stored_groups = stored.split("=")
    if len(compiled) > 1:  # group by group
        for i, comps in enumerate(compiled):
            if not comps:
                continue
            group = stored_groups[i] if i < len(stored_groups) else ""
            if not _group_matches(group, comps):
                return False
        return True
    comps = compiled[0]
    if not comps:
        return True
    return any(_group_matches(group, comps) for group in stored_groups if group)


def _group_matches(group: str, comps: tuple[str | None, ...]) -> bool:
    values = _components(group)
    for i, pattern in enumerate(comps):
        if pattern is None:
            continue
        value = values[i] if i < len(values) else ""
        if not wildcard_match(pattern, value):
            return False
    return True


def normalise_time(value: str, upper: bool) -> str:
    """TM (HH, HHMM, HHMMSS, HHMMSS.FFFFFF, HH:MM:SS) → HHMMSS; an open end gets 00/59."""
    digits = value.replace(":", "").split(".")[0].strip()
    fill = "235959" if upper else "000000"
    return (digits + fill[len(digits):])[:6]


def time_of_day_range(time: Match) -> tuple[str, str]:
    """HHMMSS bounds of a TM single value or range (a time given alone: any day)."""
    if time.kind == "single":
        return normalise_time(time.value, False), normalise_time(time.value, True)
    return (normalise_time(time.low, False) if time.low else "000000",
            normalise_time(time.high, True) if time.high else "235959")


def datetime_range(date: Match | None, time: Match | None) -> tuple[str, str]:
    """The combined SPS start date/time range as YYYYMMDDHHMMSS bounds ('' = open).

    PS3.4 C.2.2.2.5.1: Date and Time given together are matched as one date-time range.
    """
    if date is None:
        return "", ""
    d_lo, d_hi = (date.value, date.value) if date.kind == "single" else (date.low, date.high)
    t_lo, t_hi = ("000000", "235959") if time is None else time_of_day_range(time)
    low = d_lo + t_lo if d_lo else ""
    high = d_hi + t_hi if d_hi else ""
    return low, high
