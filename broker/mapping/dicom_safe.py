"""Mapped values that keep their DICOM value multiplicity: no stray backslash.

In DICOM a backslash separates the values of a multi-valued element (PS3.5 6.4), so an HL7
``\\E\\`` (a literal backslash) inside a name or an ID would come back from a C-FIND as two
values. Only LT, ST and UT hold a backslash as a character (their VM is always 1 and their
repertoire includes it); every other string VR either uses it as the value delimiter or
forbids it (AE, UR). The mapping engine replaces it before the value is stored, so the
worklist, MPPS and every outbound message see the same text:

- ``_`` in CS, whose repertoire is upper-case letters, digits, space and underscore;
- ``/`` everywhere else: the nearest look-alike, in the default repertoire of every text VR,
  and with no meaning of its own in PN (``^`` ``=``), in query matching (``*`` ``?``) or in
  HL7 (``|^~\\&``).

PN has two delimiters of its own: ``^`` between components and ``=`` between component
groups (PS3.5 6.2.1). A ``^`` from an HL7 ``\\S\\`` or a literal ``=`` inside one HL7 name
component would move the rest of the name into another component or group, so the name
transforms replace each by ``/`` too (``pn_component``) and note it.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_dict

#: VRs whose single value may contain a backslash
BACKSLASH_ALLOWED = frozenset({"LT", "ST", "UT"})
REPLACEMENT = {"CS": "_"}
DEFAULT_REPLACEMENT = "/"


#: the PN component and component group delimiters
PN_DELIMITERS = ("^", "=")
PN_REPLACEMENT = "/"
#: finds a PN delimiter in a text (one look at a whole name before any per-component work)
find_pn_delimiter = re.compile("[" + re.escape("".join(PN_DELIMITERS)) + "]").search


def pn_component(text: str) -> tuple[str, list[str]]:
    """One name component's text with each PN delimiter replaced, and the delimiters found."""
    found = [d for d in PN_DELIMITERS if d in text]
    for delimiter in found:
        text = text.replace(delimiter, PN_REPLACEMENT)
    return text, found


def replacement(vr: str) -> str:
    return REPLACEMENT.get(vr, DEFAULT_REPLACEMENT)


@cache
def keyword_vr(keyword: str) -> str:
    """The VR of a DICOM keyword ('' when it is not one)."""
    tag = keyword_dict.get(keyword)
    return str(dictionary_VR(tag)) if tag is not None else ""


def safe_value(vr: str, value: Any) -> tuple[Any, bool]:
    """``value`` with each backslash replaced as its VR needs; True when one was."""
    if isinstance(value, str):
        if vr in BACKSLASH_ALLOWED or "\\" not in value:
            return value, False
        return value.replace("\\", replacement(vr)), True
    return value, False


def safe_items(keyword: str, vr: str,
               items: list[Any]) -> tuple[list[Any], list[tuple[str, str]]]:
    """The mapped values of ``keyword`` made safe, and what was changed: (where, VR)."""
    if all(type(item) is str and "\\" not in item for item in items):
        return items, []  # the usual field: text with no backslash, nothing to look at
    changed: list[tuple[str, str]] = []
    out: list[Any] = []
    for item in items:
        if isinstance(item, dict):  # a sequence item: one level of keyword → value
            fixed: dict[str, Any] = {}
            for sub, value in item.items():
                sub_vr = keyword_vr(sub)
                fixed[sub], hit = safe_value(sub_vr, value)
                if hit:
                    changed.append((f"{keyword} > {sub}", sub_vr))
            out.append(fixed)
        else:
            value, hit = safe_value(vr, item)
            if hit:
                changed.append((keyword, vr))
            out.append(value)
    return out, list(dict.fromkeys(changed))
