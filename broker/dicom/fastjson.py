"""DICOM JSON (PS3.18 F.2) straight from an encoded dataset (little endian, implicit or
explicit VR): what pydicom's ``Dataset.to_json_dict`` returns, without building a pydicom
element per attribute. It covers what MPPS and IAN datasets hold — text, numbers, person
names, sequences in ASCII, ISO_IR 100 or ISO_IR 192 — and answers None for anything else
(another character set, binary or private values, odd encodings), so that the caller falls
back to pydicom for that dataset.
"""

from __future__ import annotations

import struct
from typing import Any

from pydicom.datadict import dictionary_VR

STRINGS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "SH", "TM", "UC", "UI"})
TEXTS = frozenset({"LT", "ST", "UT", "UR"})  # one value, backslash is text
ENCODED = frozenset({"LO", "SH", "UC", "PN", "LT", "ST", "UT"})  # decoded by the charset
NUMBERS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
LONG_LENGTH = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR",
                         "UT", "UV"})
CHARSETS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1",
            "ISO_IR 192": "utf-8"}
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_VR_CACHE: dict[int, str | None] = {}


class _Unsupported(Exception):
    """Something this converter does not do: use pydicom."""


def to_json(data: bytes, implicit: bool) -> dict[str, Any] | None:
    """The dataset as DICOM JSON, or None when pydicom must do it."""
    try:
        result, _ = _dataset(memoryview(data), 0, len(data), implicit, "latin-1")
        return result
    except (_Unsupported, struct.error, UnicodeDecodeError, ValueError, IndexError):
        return None


def _vr_of(tag: int) -> str:
    vr = _VR_CACHE.get(tag, "")
    if vr == "":
        if tag & 0xFFFF == 0:
            vr = "UL"
        elif (tag >> 16) % 2:
            vr = None  # private: its VR is not known here
        else:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                vr = None
        _VR_CACHE[tag] = vr
    if vr is None or len(vr) != 2:  # private, unknown, or ambiguous ("US or SS")
        raise _Unsupported(f"{tag:08X}")
    return vr


def _dataset(data: memoryview, offset: int, end: int, implicit: bool, encoding: str
             ) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    while offset < end:
        group, element = struct.unpack_from("<HH", data, offset)
        tag = (group << 16) | element
        if tag == ITEM_END:
            return out, offset + 8
        if implicit:
            vr = _vr_of(tag)
            (length,) = struct.unpack_from("<I", data, offset + 4)
            offset += 8
        else:
            vr = bytes(data[offset + 4:offset + 6]).decode("ascii")
            if vr in LONG_LENGTH:
                (length,) = struct.unpack_from("<I", data, offset + 8)
                offset += 12
            else:
                (length,) = struct.unpack_from("<H", data, offset + 6)
                offset += 8
        key = f"{tag:08X}"
        if vr == "SQ":
            items, offset = _sequence(data, offset, length, implicit, encoding)
            out[key] = {"vr": "SQ", "Value": items}
            continue
        if length == UNDEFINED:
            raise _Unsupported("undefined length value")
        raw = bytes(data[offset:offset + length])
        offset += length
        if tag == 0x00080005:
            charset = raw.decode("ascii").strip(" \0")
            if charset not in CHARSETS:
                raise _Unsupported(charset)
            encoding = CHARSETS[charset]
        out[key] = _element(vr, raw, encoding)
    return out, offset


def _sequence(data: memoryview, offset: int, length: int, implicit: bool, encoding: str
              ) -> tuple[list[dict[str, Any]], int]:
    end = len(data) if length == UNDEFINED else offset + length
    items: list[dict[str, Any]] = []
    while offset < end:
        group, element, item_length = struct.unpack_from("<HHI", data, offset)
        tag = (group << 16) | element
        offset += 8
        if tag == SEQUENCE_END:
            return items, offset
        if tag != ITEM:
            raise _Unsupported("not an item")
        item_end = len(data) if item_length == UNDEFINED else offset + item_length
        item, offset = _dataset(data, offset, item_end, implicit, encoding)
        items.append(item)
    if length == UNDEFINED:
        raise _Unsupported("sequence without delimiter")
    return items, offset


def _element(vr: str, raw: bytes, encoding: str) -> dict[str, Any]:
    if vr in NUMBERS:
        code = NUMBERS[vr]
        count = len(raw) // struct.calcsize(code)
        if count * struct.calcsize(code) != len(raw):
            raise _Unsupported("odd numeric length")
        values: list[Any] = list(struct.unpack(f"<{count}{code}", raw))
        return {"vr": vr, "Value": values} if values else {"vr": vr}
    if vr in ("DS", "IS"):
        text = raw.decode("ascii").strip(" \0")
        if not text:
            return {"vr": vr}
        parts = [p.strip() for p in text.split("\\")]
        if any(not p for p in parts):
            raise _Unsupported("empty number")
        return {"vr": vr, "Value": [float(p) if vr == "DS" else int(p) for p in parts]}
    if vr not in STRINGS and vr not in TEXTS and vr != "PN":
        raise _Unsupported(vr)
    text = raw.decode(encoding if vr in ENCODED else "ascii")
    if vr == "UI":
        text = text.rstrip("\0 ")
    elif vr in TEXTS:
        text = text.rstrip(" \0")
        return {"vr": vr, "Value": [text]} if text else {"vr": vr}
    else:
        text = text.rstrip(" \0")
    if not text:
        return {"vr": vr}
    parts = text.split("\\")
    if vr != "PN":
        parts = [p.strip(" ") for p in parts] if vr in ("AE", "CS", "DA", "TM", "DT",
                                                          "AS") else parts
        if len(parts) > 1 and any(not p for p in parts):
            raise _Unsupported("empty value in a multi-valued attribute")
        return {"vr": vr, "Value": parts}
    names = []
    for part in parts:
        groups = part.split("=")
        if not part or len(groups) > 3 or any(not g for g in groups):
            raise _Unsupported("person name with empty groups")
        names.append(dict(zip(("Alphabetic", "Ideographic", "Phonetic"), groups,
                              strict=False)))
    return {"vr": "PN", "Value": names}
