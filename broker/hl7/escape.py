"""HL7 v2 escape sequences (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh\\ \\.br\\ …)."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The separators a message declares in MSH-1 and MSH-2."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"


DEFAULT_DELIMITERS = Delimiters()
LINE_BREAK = "\r\n"


def unescape(text: str, d: Delimiters = DEFAULT_DELIMITERS, codec: str = "latin-1") -> str:
    """Replace escape sequences by the characters they stand for.

    Highlighting (\\H\\ \\N\\) and character-set switches (\\Cxxyy\\ \\Mxxyyzz\\) are dropped;
    an unknown or unterminated sequence is kept as it is.
    """
    esc = d.escape
    if not esc or esc not in text:
        return text
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        j = text.find(esc, i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        k = text.find(esc, j + 1)
        if k < 0:
            out.append(text[j:])
            break
        out.append(_expand(text[j + 1 : k], d, codec, text[j : k + 1]))
        i = k + 1
    return "".join(out)


def _expand(seq: str, d: Delimiters, codec: str, literal: str) -> str:
    simple = {"F": d.field, "S": d.component, "T": d.subcomponent, "R": d.repetition,
              "E": d.escape, ".br": LINE_BREAK, "H": "", "N": ""}
    if seq in simple:
        return simple[seq]
    if seq[:1] == "X" and len(seq) > 1 and len(seq) % 2 == 1:
        try:
            return bytes.fromhex(seq[1:]).decode(codec, errors="replace")
        except ValueError:
            return literal
    if seq[:1] in ("C", "M") and len(seq) in (5, 7):
        return ""
    return literal


_DEFAULT_SPECIAL = re.compile(r"[\\|^&~\r\n]")


def escape(text: str, d: Delimiters = DEFAULT_DELIMITERS) -> str:
    """Escape the delimiters and line breaks of ``text`` for use inside a field."""
    if d is DEFAULT_DELIMITERS:
        if not _DEFAULT_SPECIAL.search(text):
            return text
    elif not any(c in text for c in (d.escape, d.field, d.component, d.subcomponent,
                                     d.repetition, "\r", "\n")):
        return text
    text = text.replace(d.escape, f"{d.escape}E{d.escape}")
    for char, code in ((d.field, "F"), (d.component, "S"), (d.subcomponent, "T"),
                       (d.repetition, "R")):
        text = text.replace(char, f"{d.escape}{code}{d.escape}")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("\n", f"{d.escape}.br{d.escape}")
