"""Value transforms named in mapping files (``transform: date``, ``{lookup: priority}`` …).

A *structural* transform reads raw HL7 values (components still joined, escapes intact) and
must come first in a chain; a *text* transform reads the unescaped text each step before it
produced. Each raises TransformError with a reason a sender can act on.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from broker.hl7.message import Message
from broker.mapping import dicom_safe, names
from broker.model.uid import is_uid


class TransformError(ValueError):
    """A value cannot be converted; the caller adds the field location."""


@dataclass(frozen=True, slots=True)
class TransformContext:
    message: Message
    tables: Mapping[str, Mapping[str, str]]
    #: what a transform left out or changed, without patient data; the engine adds the
    #: keyword and path and stores them with the message as HL7 warnings
    notes: list[str] = field(default_factory=list)


Fn = Callable[[list[Any], TransformContext, Any], list[Any]]

_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2}(?:\.\d{1,4})?)?([+-]\d{4})?$")


def _parse_dtm(text: str) -> re.Match[str]:
    m = _DTM.match(text.strip())
    if not m:
        raise TransformError(f"{text!r} is not an HL7 date/time (YYYY[MM[DD[HH[MM[SS]]]]])")
    month, day = m[2], m[3]
    if month and not 1 <= int(month) <= 12:
        raise TransformError(f"{text!r} has month {month}")
    if day and not 1 <= int(day) <= calendar.monthrange(int(m[1]), int(month))[1]:
        raise TransformError(f"{text!r} has day {day}, which month {month} does not have")
    if (m[4] and int(m[4]) > 23) or (m[5] and int(m[5]) > 59):
        raise TransformError(f"{text!r} has an impossible time of day")
    return m


def per_value(convert: Callable[[str], str]) -> Fn:
    """A text transform applying ``convert`` to every non-empty value."""
    def transform(items: list[Any], ctx: TransformContext, param: Any) -> list[Any]:
        return [convert(str(text)) if text else "" for text in items]
    return transform


def _date(text: str) -> str:
    m = _parse_dtm(text)
    return m[1] + (m[2] or "01") + (m[3] or "01")


def _time(text: str) -> str:
    m = _parse_dtm(text)
    return (m[4] or "") + (m[5] or "") + (m[6] or "") if m[4] else ""


def _datetime(text: str) -> str:
    return "".join(x or "" for x in _parse_dtm(text).groups())


to_date = per_value(_date)
to_time = per_value(_time)
to_datetime = per_value(_datetime)


def _components(ctx: TransformContext, raw: str) -> list[str]:
    """The components' text (first subcomponent of each, unescaped)."""
    msg = ctx.message
    d = msg.delimiters
    parts = [c.split(d.subcomponent, 1)[0] for c in raw.split(d.component)] \
        if d.subcomponent in raw else raw.split(d.component)
    return [msg.text(c) for c in parts] if d.escape in raw else parts


def _name_components(ctx: TransformContext, texts: list[str]) -> list[str]:
    """Name components with no PN delimiter inside one of them (noted when one was replaced)."""
    if dicom_safe.find_pn_delimiter("".join(texts)) is None:
        return texts  # the usual name: one search of its text, not a call per component
    out: list[str] = []
    found: list[str] = []
    for text in texts:
        fixed, hit = dicom_safe.pn_component(text)
        out.append(fixed)
        found += [d for d in hit if d not in found]
    if found:
        which = " and ".join(repr(d) for d in found)
        ctx.notes.append(f"{which} inside a name component would be a DICOM PN delimiter; "
                         f"replaced by {dicom_safe.PN_REPLACEMENT!r}")
    return out


def _pn(family: str, given: str, middle: str, prefix: str, suffix: str) -> str:
    return "^".join([family, given, middle, prefix, suffix]).rstrip("^")


def person_name(items: list[Any], ctx: TransformContext, param: Any) -> list[Any]:
    """XPN repetitions → one PN ``alphabetic=ideographic=phonetic``: XPN-8 (name
    representation code A, I, P) picks a repetition's group; without it the policy
    ``groups`` (script or position, see names.py) does. Every repetition left out is noted."""
    policy = names.policy_of(param)
    reps = []
    for index, raw in enumerate(items, start=1):
        c = _components(ctx, raw)
        c = _name_components(ctx, c[:6]) + c[6:] + [""] * 9  # XPN-1 … XPN-6 are the name
        name = _pn(c[0], c[1], c[2], c[4], " ".join(x for x in (c[3], c[5]) if x))
        if name:
            reps.append(names.Repetition(index, name, c[6].strip().upper(),
                                         c[7].strip().upper()[:1]))
    groups, notes = names.place(reps, policy)
    ctx.notes.extend(notes)
    if not groups:
        return [""]
    return ["=".join(groups.get(g, "") for g in names.GROUPS).rstrip("=")]


def physician_name(items: list[Any], ctx: TransformContext, param: Any) -> list[Any]:
    """XCN (ID^family^given^middle^suffix^prefix^degree) → PN, one per repetition."""
    out = []
    for raw in items:
        c = _components(ctx, raw)
        c = c[:1] + _name_components(ctx, c[1:7]) + [""] * 8  # XCN-2 … XCN-7 are the name
        out.append(_pn(c[1], c[2], c[3], c[5], " ".join(x for x in (c[4], c[6]) if x)))
    return out


def staff_name(items: list[Any], ctx: TransformContext, param: Any) -> list[Any]:
    """A name that senders write as XCN (ID first), NDL/CNN (ID&family&… in component 1) or
    XPN (family first): an empty or digit-bearing first component is read as an ID."""
    msg = ctx.message
    out = []
    for raw in items:
        comps = raw.split(msg.delimiters.component)
        if msg.delimiters.subcomponent in comps[0]:
            c = [msg.text(x) for x in comps[0].split(msg.delimiters.subcomponent)]
        else:
            c = _components(ctx, raw)
            if c[0] and not any(ch.isdigit() for ch in c[0]):
                c = ["", *c]
        c = c[:1] + _name_components(ctx, c[1:7]) + [""] * 8
        out.append(_pn(c[1], c[2], c[3], c[5], " ".join(x for x in (c[4], c[6]) if x)))
    return out


def code(items: list[Any], ctx: TransformContext, param: Any) -> list[Any]:
    """CE/CWE → code sequence items; ``triplets: [2, 1]`` tries components 4-6, then 1-3."""
    triplets = (param or {}).get("triplets", [1]) if isinstance(param, dict) else [1]
    out: list[Any] = []
    for raw in items:
        c = _components(ctx, raw) + [""] * 6
        for t in triplets:
            value, meaning, scheme = c[3 * (t - 1) : 3 * t]
            if value:
                item = {"CodeValue": value, "CodingSchemeDesignator": scheme or "L"}
                if meaning:
                    item["CodeMeaning"] = meaning[:64]
                out.append(item)
                break
    return out


def address(items: list[Any], ctx: TransformContext, param: Any) -> list[Any]:
    return ["^".join(_components(ctx, raw)).rstrip("^") for raw in items]


def join_lines(items: list[Any], ctx: TransformContext, param: Any) -> list[Any]:
    lines = [ctx.message.text(raw) for raw in items]
    return ["\r\n".join(x for x in lines if x)]


def lookup(items: list[Any], ctx: TransformContext, param: Any) -> list[Any]:
    table = ctx.tables[str(param)]
    out = []
    for text in items:
        if text in table:
            out.append(table[text])
        elif text and "*" in table:
            out.append(table["*"])
        else:
            out.append("")
    return out


def uid(items: list[Any], ctx: TransformContext, param: Any) -> list[Any]:
    for text in items:
        if text and not is_uid(text):
            raise TransformError(f"{text!r} is not a valid UID (digits and dots, at most 64)")
    return items


def _number(text: str) -> str:
    return decimal_string(Decimal(1), text)


number = per_value(_number)


def decimal_string(factor: Decimal, text: str) -> str:
    """``text`` × ``factor`` as a DICOM DS value (at most 16 characters, never truncated)."""
    try:
        value = Decimal(text.strip())
        if not value.is_finite():
            raise InvalidOperation
        value = (value * factor).normalize()
    except InvalidOperation as exc:
        raise TransformError(f"{text!r} is not a number") from exc
    plain = format(value, "f")
    if len(plain) <= 16:
        return plain
    for digits in range(15, 0, -1):
        short = format(value, f".{digits}g")
        if len(short) <= 16:
            return short
    raise TransformError(f"{text!r} cannot be written in 16 characters")


def upper(items: list[Any], ctx: TransformContext, param: Any) -> list[Any]:
    return [str(t).upper() for t in items]


def lower(items: list[Any], ctx: TransformContext, param: Any) -> list[Any]:
    return [str(t).lower() for t in items]


def strip(items: list[Any], ctx: TransformContext, param: Any) -> list[Any]:
    return [str(t).strip() for t in items]


def truncate(items: list[Any], ctx: TransformContext, param: Any) -> list[Any]:
    return [str(t)[: int(param)] for t in items]


#: name → (function, is_structural, parameter kind: None | 'table' | 'int' | 'dict' | 'names')
TRANSFORMS: dict[str, tuple[Fn, bool, str | None]] = {
    "date": (to_date, False, None),
    "time": (to_time, False, None),
    "datetime": (to_datetime, False, None),
    "person_name": (person_name, True, "names"),
    "physician_name": (physician_name, True, None),
    "staff_name": (staff_name, True, None),
    "code": (code, True, "dict"),
    "address": (address, True, None),
    "join_lines": (join_lines, True, None),
    "lookup": (lookup, False, "table"),
    "uid": (uid, False, None),
    "number": (number, False, None),
    "upper": (upper, False, None),
    "lower": (lower, False, None),
    "strip": (strip, False, None),
    "truncate": (truncate, False, "int"),
}

#: the transform a VR needs when a value comes from a path
VR_TRANSFORM = {"DA": "date", "TM": "time", "DT": "datetime", "SQ": "code"}
