"""The broker's outbound HL7 judged by an independent library: hl7apy, strict.

``parse_message(text, validation_level=STRICT, find_groups=True)`` checks each value's data
type and length as it parses (raising at the first one that fails); ``validate`` then checks
the message structure (segment groups, cardinality, data types) and reports values outside
their HL7 table and over-long values as warnings. Every error and every warning counts here,
except the library findings below, each recognised only where its evidence holds:

- hl7apy validates a ``choice`` group as if it were a sequence, so an ORM^O01 order detail
  holding its OBR "misses" the RQD, RQ1, ODS, ODT and RXO alternatives (hl7apy's
  validation.py sends 'sequence' and 'choice' through one branch; crs4/hl7apy issue #151).
  Excused only when each choice group holds exactly one of its alternatives.
- hl7apy's v2.3.1 tables make OBX-4 (Observation Sub-ID) required. HL7 v2.3.1 marks it
  conditional (needed to tell apart OBX segments with the same OBX-3), and hl7apy's own v2.3,
  v2.4 and v2.5.1 tables have it optional. Excused only when no two OBX share an OBX-3.
- With ``find_groups`` hl7apy drops a Z segment it cannot place in a group (parser.py
  ``parse_segments`` finds no reference for it and moves on; crs4/hl7apy issue #89), which
  also shifts the groups of the segments after it. Z segments are therefore taken out before
  hl7apy sees the message and checked here against their IHE definition (ZDS-1, RP:
  ``UID^100^Application^DICOM``), and every other segment must come back from the parse.
- hl7apy finds the message structure only in MSH-9.3 or as ``<MSH-9.1>_<MSH-9.2>``, while
  MSH-9.3 is optional before v2.4 and table 0354 gives ``ACK`` for every ``ACK^<event>``. A
  v2.3.1 ``ACK^<event>`` is therefore handed to hl7apy as ``ACK^<event>^ACK``.
- hl7apy's table 0396 (coding systems) holds the pattern ``HL7nnnn`` ("HL7 table nnnn")
  literally, so ``HL70357`` "is not in the table". Excused for ``HL7`` and four digits.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from pathlib import Path

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Element, Message
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

CHOICE_ALTERNATIVE = re.compile(r"Error: Missing required child (\w+_CHOICE)\.\w+$")
UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
HL7_TABLE_CODING_SYSTEM = re.compile(
    r"Warning: Value HL7\d{4} not in table HL70396 in element \w+\.C(W)?E_3")
ACK_WITHOUT_STRUCTURE = re.compile(
    r"(MSH\|[^|]*(?:\|[^|]*){6}\|ACK\^\w+)(\|[^|]*\|[^|]*\|2\.3\.1[|^\r])")


def problems(text: str) -> list[str]:
    """Everything hl7apy (strict) finds wrong with the message, less the findings above."""
    segments = [s for s in text.split("\r") if s]
    found = [p for s in segments if s.startswith("Z") for p in z_segment_problems(s)]
    standard = [s for s in segments if not s.startswith("Z")]
    try:
        message = parse_message(_for_hl7apy(standard),
                                validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    except HL7apyException as exc:
        return [*found, f"parse: {type(exc).__name__}: {exc}"]
    placed = [s.name for s in _segments(message)]
    if placed != [s[:3] for s in standard]:
        found.append(f"segments {[s[:3] for s in standard]} parsed as {placed}")
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.txt"
        with contextlib.suppress(HL7apyException):  # every error is in the report too
            message.validate(report_file=str(report))
        lines = report.read_text(encoding="utf-8").splitlines()
    return found + [line for line in lines if not _excused(line, message, standard)]


def structure(text: str) -> str:
    """The message structure hl7apy reads the message as (e.g. ORM_O01)."""
    standard = [s for s in text.split("\r") if s and not s.startswith("Z")]
    return str(parse_message(_for_hl7apy(standard), find_groups=True).name)


def _for_hl7apy(segments: list[str]) -> str:
    """The segments as one message, a v2.3.1 ACK with its MSH-9.3 (see above)."""
    return ACK_WITHOUT_STRUCTURE.sub(r"\1^ACK\2", "\r".join(segments) + "\r")


def z_segment_problems(segment: str) -> list[str]:
    """A Z segment the broker sends, against its IHE definition."""
    fields = segment.split("|")
    if fields[0] != "ZDS":
        return [f"{fields[0]}: not a Z segment the broker defines"]
    parts = fields[1].split("^") if len(fields) > 1 else [""]
    uid = parts[0]
    if parts[1:] != ["100", "Application", "DICOM"] or len(fields) != 2:
        return [f"ZDS: {segment!r} is not ZDS|<Study Instance UID>^100^Application^DICOM"]
    if not UID.fullmatch(uid) or len(uid) > 64:
        return [f"ZDS-1.1 {uid!r} is not a DICOM UID"]
    return []


def _segments(element: Element) -> list[Element]:
    if element.classname == "Segment":
        return [element]
    return [s for child in element.children for s in _segments(child)]


def _groups(element: Element, name: str) -> list[Element]:
    if element.classname == "Segment":
        return []
    own = [element] if element.name == name else []
    return own + [g for child in element.children for g in _groups(child, name)]


def _excused(line: str, message: Message, segments: list[str]) -> bool:
    if HL7_TABLE_CODING_SYSTEM.fullmatch(line):
        return True
    choice = CHOICE_ALTERNATIVE.fullmatch(line)
    if choice:
        groups = _groups(message, choice[1])
        return bool(groups) and all(len(g.children) == 1 for g in groups)
    if line == "Error: Missing required child OBX.OBX_4" and message.version == "2.3.1":
        ids = [s.split("|")[3] for s in segments if s.startswith("OBX|")]
        return len(ids) == len(set(ids))
    return False
