"""Field paths such as ``PID-3.1``, ``PID-5[*]``, ``OBR[2]-4.4`` or ``OBX{3.2=Body Weight}-5``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from broker.hl7.message import Message, Segment

_PATH = re.compile(
    r"^(?P<seg>[A-Z][A-Z0-9]{2})"
    r"(?:\[(?P<occ>[1-9]\d*|\*)\])?"
    r"(?:\{(?P<cond>[^{}]+)\})?"
    r"-(?P<field>[1-9]\d*)"
    r"(?:\[(?P<rep>[1-9]\d*|\*)\])?"
    r"(?:\.(?P<comp>[1-9]\d*))?"
    r"(?:\.(?P<sub>[1-9]\d*))?$"
)
_COND = re.compile(r"^(?P<field>[1-9]\d*)(?:\.(?P<comp>[1-9]\d*))?=(?P<value>.*)$")


class PathError(ValueError):
    """A path string does not follow the path grammar."""


@dataclass(frozen=True, slots=True)
class Condition:
    field: int
    component: int | None
    value: str


@dataclass(frozen=True, slots=True)
class Path:
    segment: str
    occurrence: int | None  # None: the first; 0: every occurrence ('SEG[*]')
    conditions: tuple[Condition, ...]
    field: int
    repetition: int | None  # None means every repetition ('[*]')
    component: int | None
    subcomponent: int | None
    text: str
    repeats: bool = False  # more than one value: '[*]' on the field or the segment
    #: the first segment of its name, one field, no condition, not MSH-1/MSH-2: see pick()
    simple: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "repeats", self.repetition is None or self.occurrence == 0)
        object.__setattr__(self, "simple", not self.conditions and self.occurrence is None
                           and self.repetition is not None
                           and not (self.segment == "MSH" and self.field <= 2))

    def __str__(self) -> str:
        return self.text


def parse_path(text: str) -> Path:
    m = _PATH.match(text.strip())
    if not m:
        raise PathError(
            f"{text!r} is not a field path (expected e.g. PID-3.1, PID-5[*], OBR[2]-4.4, "
            "OBX{3.2=Body Weight}-5)"
        )
    conditions: list[Condition] = []
    if m["cond"]:
        for alternative in m["cond"].split("|"):
            c = _COND.match(alternative.strip())
            if not c:
                raise PathError(f"{text!r}: condition {alternative!r} must look like 3.2=VALUE")
            conditions.append(Condition(int(c["field"]), int(c["comp"]) if c["comp"] else None,
                                        c["value"]))
    rep = m["rep"]
    return Path(
        segment=m["seg"],
        occurrence=None if not m["occ"] else 0 if m["occ"] == "*" else int(m["occ"]),
        conditions=tuple(conditions),
        field=int(m["field"]),
        repetition=None if rep == "*" else int(rep or 1),
        component=int(m["comp"]) if m["comp"] else None,
        subcomponent=int(m["sub"]) if m["sub"] else None,
        text=text.strip(),
    )


class Scope:
    """A run of segments (an order group, a step's own segment) indexed by segment name."""

    __slots__ = ("by_name", "segments")

    def __init__(self, segments: Sequence[Segment]) -> None:
        self.segments = segments
        self.by_name: dict[str, list[Segment]] = {}
        for seg in segments:
            self.by_name.setdefault(seg.name, []).append(seg)


def select_segments(path: Path, message: Message, scopes: Sequence[Scope] | None
                    ) -> list[Segment]:
    """Segments the path names, from the innermost scope that has any (step, group, header).

    Without scopes the whole message is searched.
    """
    candidates: list[Segment] = []
    if scopes is None:
        candidates = list(message.all(path.segment))
    else:
        for scope in scopes:
            found = scope.by_name.get(path.segment)
            if found:
                candidates = found
                break
    if path.conditions:
        candidates = [s for s in candidates if _matches(s, path.conditions, message)]
    if path.occurrence == 0:
        return candidates
    if path.occurrence is not None:
        return candidates[path.occurrence - 1 : path.occurrence]
    return candidates[:1]


def _matches(seg: Segment, conditions: tuple[Condition, ...], message: Message) -> bool:
    d = message.delimiters
    for cond in conditions:
        raw = seg.get(cond.field).split(d.repetition)[0]
        if cond.component is not None:
            raw = message.component(raw, cond.component)
        if message.text(raw).strip() == cond.value:
            return True
    return False


def pick(path: Path, message: Message, scopes: Sequence[Scope]) -> str:
    """``first_value`` of a ``simple`` path within scopes, without its generic branching."""
    name = path.segment
    for scope in scopes:
        found = scope.by_name.get(name)
        if found:
            return _value_in(found[0].fields, path, message)
    return ""


def first_value(path: Path, message: Message, scopes: Sequence[Scope] | None = None) -> str:
    """The raw value a single-valued path points to ('' when absent): the hot path of mapping.

    Equivalent to ``values(...)[0]`` for a path without ``[*]``.
    """
    segments = select_segments(path, message, scopes)
    if not segments:
        return ""
    seg = segments[0]
    if seg.name == "MSH" and path.field <= 2:
        return (values(path, message, scopes) or [""])[0]
    return _value_in(seg.fields, path, message)


def _value_in(fields: Sequence[str], path: Path, message: Message) -> str:
    """The raw value of a single-valued path in a segment's fields (not MSH-1/MSH-2)."""
    raw = fields[path.field] if path.field < len(fields) else ""
    if not raw:
        return ""
    d = message.delimiters
    if d.repetition in raw:
        reps = raw.split(d.repetition)
        raw = reps[path.repetition - 1] if path.repetition and path.repetition <= len(reps) else ""
    elif path.repetition and path.repetition > 1:
        return ""
    if path.component is not None:
        parts = raw.split(d.component)
        raw = parts[path.component - 1] if path.component <= len(parts) else ""
        if path.subcomponent is not None:
            parts = raw.split(d.subcomponent)
            raw = parts[path.subcomponent - 1] if path.subcomponent <= len(parts) else ""
    return raw


def values(path: Path, message: Message, scopes: Sequence[Scope] | None = None) -> list[str]:
    """The raw (still escaped) values the path points to; empty values are kept."""
    d = message.delimiters
    out: list[str] = []
    for seg in select_segments(path, message, scopes):
        raw = seg.fields[1] if seg.name == "MSH" and path.field == 1 else seg.get(path.field)
        reps = [raw] if seg.name == "MSH" and path.field == 2 else raw.split(d.repetition)
        if path.repetition is not None:
            reps = reps[path.repetition - 1 : path.repetition]
        for rep in reps:
            value = rep
            if path.component is not None:
                value = message.component(value, path.component)
                if path.subcomponent is not None:
                    parts = value.split(d.subcomponent)
                    value = parts[path.subcomponent - 1] if path.subcomponent <= len(parts) else ""
            out.append(value)
    return out
