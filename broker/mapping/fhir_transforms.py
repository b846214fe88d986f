"""Transforms of FHIR values (``transform:`` in the ``fhir:`` mapping): ISO dates and times
to DICOM DA/TM/DT, HumanName to PN, CodeableConcept to code sequence items, ``urn:oid:``
systems; and the HL7 mapping's text transforms (lookup, uid, number, upper …) as they are.

A *structural* transform reads the FHIR element itself (a HumanName, a CodeableConcept) and
must come first; the others read text."""

from __future__ import annotations

import re
from typing import Any

from broker.hl7.message import parse
from broker.mapping import dicom_safe
from broker.mapping.transforms import TRANSFORMS, Fn, TransformContext, TransformError

#: the HL7 transforms that only read text and tables
SHARED = ("lookup", "uid", "number", "upper", "lower", "strip", "truncate")
_ISO = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?"
                  r"(Z|[+-]\d{2}:\d{2})?)?)?)?$")
#: what the text transforms get as their context's message (they never read it)
_NO_MESSAGE = parse("MSH|^~\\&|FHIR||||||ORM^O01|FHIR|P|2.5\r", "ascii")


def context(tables: Any) -> TransformContext:
    return TransformContext(_NO_MESSAGE, tables)


def _iso(text: str) -> re.Match[str]:
    m = _ISO.match(str(text).strip())
    if not m:
        raise TransformError(f"{text!r} is not a FHIR date or dateTime")
    return m


def _date(items: list[Any], ctx: TransformContext, param: Any) -> list[Any]:
    out = []
    for text in items:
        m = _iso(text)
        out.append(m[1] + (m[2] or "01") + (m[3] or "01"))
    return out


def _time(items: list[Any], ctx: TransformContext, param: Any) -> list[Any]:
    """The time of day as written (the sender's offset is dropped, as HL7's is)."""
    out = []
    for text in items:
        m = _iso(text)
        out.append(f"{m[4]}{m[5]}{m[6] or ''}{(m[7] or '')[:7]}" if m[4] else "")
    return out


def _datetime(items: list[Any], ctx: TransformContext, param: Any) -> list[Any]:
    out = []
    for text in items:
        m = _iso(text)
        offset = (m[8] or "").replace(":", "").replace("Z", "+0000")
        out.append("".join(x or "" for x in m.groups()[:7]) + offset)
    return out


def _pn_part(text: str) -> str:
    fixed, _ = dicom_safe.pn_component(text)
    return fixed


def human_name(items: list[Any], ctx: TransformContext, param: Any) -> list[Any]:
    """HumanName → PN family^given^middle^prefix^suffix (the first name given)."""
    for name in items:
        if not isinstance(name, dict):
            continue
        given = [str(g) for g in name.get("given", []) or []]
        parts = [name.get("family", "") or "", given[0] if given else "",
                 " ".join(given[1:]), " ".join(name.get("prefix", []) or []),
                 " ".join(name.get("suffix", []) or [])]
        pn = "^".join(_pn_part(str(p)) for p in parts).rstrip("^")
        if not pn and name.get("text"):
            pn = _pn_part(str(name["text"]))
        if pn:
            return [pn]
    return []


def coding(items: list[Any], ctx: TransformContext, param: Any) -> list[Any]:
    """CodeableConcept (or Coding) → code sequence items; ``{systems: TABLE}`` maps each
    coding's system to its Coding Scheme Designator (unlisted: the table's "*", else L)."""
    table = ctx.tables.get(str((param or {}).get("systems", ""))) if isinstance(
        param, dict) else None
    out: list[Any] = []
    for concept in items:
        if not isinstance(concept, dict):
            continue
        codings = concept.get("coding", [concept] if "code" in concept else [])
        for c in codings:
            if not isinstance(c, dict) or not c.get("code"):
                continue
            system = str(c.get("system", ""))
            scheme = (table.get(system) or table.get("*", "L")) if table is not None else "L"
            item = {"CodeValue": str(c["code"])[:16], "CodingSchemeDesignator": scheme or "L"}
            meaning = c.get("display") or concept.get("text")
            if meaning:
                item["CodeMeaning"] = str(meaning)[:64]
            out.append(item)
            break
    return out


def oid(items: list[Any], ctx: TransformContext, param: Any) -> list[Any]:
    """``urn:oid:1.2.3`` → ``1.2.3`` (other values as they are)."""
    return [str(t)[8:] if str(t).startswith("urn:oid:") else str(t) for t in items]


def join_lines(items: list[Any], ctx: TransformContext, param: Any) -> list[Any]:
    return ["\r\n".join(str(t) for t in items if t)]


def _text_only(name: str) -> Fn:
    fn = TRANSFORMS[name][0]

    def transform(items: list[Any], ctx: TransformContext, param: Any) -> list[Any]:
        for item in items:
            if isinstance(item, dict | list):
                raise TransformError(f"{name} needs text, and the expression gives an "
                                     "element (add .value, .code …)")
        return fn([str(i) for i in items], ctx, param)
    return transform


#: name → (function, is_structural, parameter kind), as broker.mapping.transforms.TRANSFORMS
FHIR_TRANSFORMS: dict[str, tuple[Fn, bool, str | None]] = {
    **{name: (_text_only(name), False, TRANSFORMS[name][2]) for name in SHARED},
    "date": (_date, False, None),
    "time": (_time, False, None),
    "datetime": (_datetime, False, None),
    "human_name": (human_name, True, None),
    "coding": (coding, True, "dict"),
    "oid": (oid, False, None),
    "join_lines": (join_lines, False, None),
}

#: the transform a VR needs when a value comes from an expression
FHIR_VR_TRANSFORM = {"DA": "date", "TM": "time", "DT": "datetime", "SQ": "coding"}
