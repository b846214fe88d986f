"""Outbound HL7 from templates (``templates`` and ``outbound`` in the mapping files)."""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_dict

from broker.hl7.escape import escape

PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
MPPS_FIELDS = frozenset({"start", "end", "station", "status", "series_count", "image_count",
                         "sop_instance_uid"})
COMPLETION_FIELDS = frozenset({
    "state", "result_status", "partial", "series_count", "instance_count",
    "committed_count", "failed_count", "available_count", "retrieve_ae", "reason",
    "transaction_uid"})
PLAIN = frozenset({"now", "control_id", "order_status"})
#: what a completion notice may wait for
REQUIREMENTS = ("committed", "available")
ON_TIMEOUT = ("send_partial", "report_problem")
#: the completion states a notice reports, with their default OBR-25 result status
COMPLETION_STATES = {"complete": "F", "partial": "A", "commitment_failed": "X"}
SCOPES = frozenset({"patient", "procedure", "step"})
#: the MPPS statuses a procedure status message can report (keys of order_status)
MPPS_STATUSES = ("IN PROGRESS", "COMPLETED", "DISCONTINUED")
#: HL7 table 0038 order status (ORC-5), the same from v2.3.1 to v2.8
ORDER_STATUS_TABLE = frozenset({"A", "CA", "CM", "DC", "ER", "HD", "IP", "RP", "SC"})
#: HL7 table 0123 result status (OBR-25)
RESULT_STATUS_TABLE = frozenset({"O", "I", "S", "A", "P", "C", "R", "F", "X", "Y", "Z"})
#: the HL7 table 0211 names a template or destination may declare in MSH-18 (each has a codec
#: in broker.hl7.charset); "UNICODE UTF-8" is new in v2.5, older versions call it "UNICODE"
ENCODABLE = ("ASCII", *(f"8859/{n}" for n in (*range(1, 10), 15)), "UNICODE UTF-8", "UNICODE",
             "GB 18030-2000", "KS X 1001", "ISO IR87", "ISO IR159", "ISO IR14", "BIG-5")


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    segments: tuple[tuple[str, tuple[tuple[int, str], ...]], ...]
    message_type: str


@dataclass(slots=True)
class OutboundRule:
    template: str
    order_status: dict[str, str] = field(default_factory=dict)
    #: completion notices only: what to wait for, how long, and what then
    require: tuple[str, ...] = ()
    timeout: float = 600.0
    on_timeout: str = "send_partial"
    result_status: dict[str, str] = field(default_factory=lambda: dict(COMPLETION_STATES))


def template_problems(template: Template) -> list[str]:
    """What makes a template unsendable as written: an MSH-18 the sender cannot encode in."""
    declared = template_charset(template)
    if declared and declared not in ENCODABLE:
        return [f"template {template.name!r} MSH-18 {declared!r} is not a character set the "
                f"broker can encode (HL7 table 0211: {', '.join(ENCODABLE)})"]
    return []


def rule_problems(event_name: str, rule: OutboundRule) -> list[str]:
    """Status codes of a rule outside the HL7 table of the field that carries them."""
    problems = []
    for mpps_status, code in rule.order_status.items():
        if mpps_status not in MPPS_STATUSES:
            problems.append(f"outbound {event_name}: order_status {mpps_status!r} is not an "
                            f"MPPS status (use {', '.join(MPPS_STATUSES)})")
        if code not in ORDER_STATUS_TABLE:
            problems.append(f"outbound {event_name}: order_status {code!r} for {mpps_status!r}"
                            " is not in HL7 table 0038 (ORC-5: "
                            f"{', '.join(sorted(ORDER_STATUS_TABLE))})")
    for state, code in rule.result_status.items():
        if code not in RESULT_STATUS_TABLE:
            problems.append(f"outbound {event_name}: result_status {code!r} for {state!r} is "
                            "not in HL7 table 0123 (OBR-25: "
                            f"{', '.join(sorted(RESULT_STATUS_TABLE))})")
    return problems


def placeholder_error(name: str) -> str | None:
    """Why a placeholder is not known, or None."""
    if name in PLAIN:
        return None
    scope, _, key = name.partition(".")
    if scope == "mpps":
        return None if key in MPPS_FIELDS else (
            f"{{{name}}}: mpps has {', '.join(sorted(MPPS_FIELDS))}")
    if scope == "completion":
        return None if key in COMPLETION_FIELDS else (
            f"{{{name}}}: completion has {', '.join(sorted(COMPLETION_FIELDS))}")
    if scope in SCOPES:
        return None if key in keyword_dict else f"{{{name}}}: {key!r} is not a DICOM keyword"
    return (f"{{{name}}} is not a placeholder (use now, control_id, order_status, "
            "patient.X, procedure.X, step.X, mpps.X or completion.X)")


#: a field compiled once per template: literal text and (placeholder, is a person name) parts
Part = str | tuple[str, bool]


@functools.lru_cache(maxsize=256)
def _compiled(template: Template) -> tuple[tuple[str, tuple[tuple[Part, ...], ...]], ...]:
    """Each segment's fields split into literals and placeholders, PN-ness looked up once."""
    segments = []
    for name, fields in template.segments:
        values = dict(fields)
        first = 3 if name == "MSH" else 1
        last = max(values, default=first - 1)
        compiled_fields = []
        for number in range(first, last + 1):
            text = values.get(number, "")
            parts: list[Part] = []
            position = 0
            for m in PLACEHOLDER.finditer(text):
                if m.start() > position:
                    parts.append(text[position:m.start()])
                key = m[1].partition(".")[2]
                parts.append((m[1], key in keyword_dict
                              and dictionary_VR(keyword_dict[key]) == "PN"))
                position = m.end()
            if position < len(text):
                parts.append(text[position:])
            compiled_fields.append(tuple(parts))
        segments.append((name, tuple(compiled_fields)))
    return tuple(segments)


def render(template: Template, context: dict[str, Any]) -> str:
    """The message text (segments ended by CR)."""
    out = []
    for name, fields in _compiled(template):
        head = ["MSH", "^~\\&"] if name == "MSH" else [name]
        out.append("|".join(head + [_fill(parts, context) for parts in fields]).rstrip("|"))
    return "\r".join(out) + "\r"


def template_charset(template: Template) -> str:
    """The MSH-18 a template declares ("" when it has none)."""
    return dict(template.segments[0][1]).get(18, "")


def _fill(parts: tuple[Part, ...], context: dict[str, Any]) -> str:
    if not parts:
        return ""
    return "".join(part if isinstance(part, str) else _value(part[0], part[1], context)
                   for part in parts)


def _value(name: str, person_name: bool, context: dict[str, Any]) -> str:
    found = _lookup(name, context)
    if found is None:
        return ""
    if isinstance(found, list):
        return "~".join(escape(str(v)) for v in found if not isinstance(v, dict))
    if person_name:  # a DICOM name's components are HL7 components; its first group only
        return "^".join(escape(c) for c in str(found).split("=")[0].split("^"))
    return escape(str(found))


def _lookup(name: str, context: dict[str, Any]) -> Any:
    if name in context:
        return context[name]
    scope, _, key = name.partition(".")
    source = context.get(scope)
    return source.get(key) if isinstance(source, dict) else None


def hl7_timestamp(when: float | None = None) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.localtime(when))
