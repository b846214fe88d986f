"""A lean HL7 v2 parser: segments and fields split eagerly, components on demand."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from broker.hl7.escape import Delimiters, unescape

_SEGMENT_SPLIT = re.compile(r"\r\n|\r|\n")
_SEGMENT_NAME = re.compile(r"^[A-Z][A-Z0-9]{2}$")


class ParseError(ValueError):
    """The message cannot be parsed; ``location`` is e.g. 'MSH-2', ``code`` from table 0357."""

    def __init__(self, reason: str, location: str = "MSH", code: int = 100) -> None:
        super().__init__(reason)
        self.reason = reason
        self.location = location
        self.code = code


@dataclass(slots=True)
class Segment:
    """One segment; ``fields[n]`` is field n (for MSH, fields[1] is the field separator)."""

    name: str
    fields: list[str]

    def get(self, n: int) -> str:
        return self.fields[n] if 0 < n < len(self.fields) else ""


@dataclass(slots=True)
class Message:
    segments: list[Segment]
    delimiters: Delimiters
    codec: str = "ascii"
    _index: dict[str, list[int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for i, seg in enumerate(self.segments):
            self._index.setdefault(seg.name, []).append(i)

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def first(self, name: str) -> Segment | None:
        idx = self._index.get(name)
        return self.segments[idx[0]] if idx else None

    def all(self, name: str) -> Iterator[Segment]:
        for i in self._index.get(name, ()):
            yield self.segments[i]

    def component(self, raw: str, n: int) -> str:
        """Component n (1-based) of a raw field or repetition, still escaped."""
        parts = raw.split(self.delimiters.component)
        return parts[n - 1] if n <= len(parts) else ""

    def text(self, raw: str) -> str:
        return unescape(raw, self.delimiters, self.codec)

    def msh_value(self, n: int, component: int = 1) -> str:
        raw = self.msh.get(n).split(self.delimiters.repetition)[0]
        return self.text(self.component(raw, component))

    @property
    def control_id(self) -> str:
        return self.msh_value(10)

    @property
    def message_code(self) -> str:
        return self.msh_value(9, 1)

    @property
    def trigger_event(self) -> str:
        return self.msh_value(9, 2)

    @property
    def message_type(self) -> str:
        """'ORM^O01' style type used to pick a mapping."""
        return f"{self.message_code}^{self.trigger_event}"

    @property
    def version(self) -> str:
        return self.msh_value(12)

    @property
    def processing_id(self) -> str:
        return self.msh_value(11)

    @property
    def sending_application(self) -> str:
        return self.msh_value(3)

    @property
    def sending_facility(self) -> str:
        return self.msh_value(4)


def parse(text: str, codec: str = "ascii") -> Message:
    """Parse decoded message text; raises ParseError naming what is wrong with the header."""
    text = text.strip("\r\n\x00 \t\x0b\x1c")
    if not text:
        raise ParseError("empty message", "MSH")
    if not text.startswith("MSH"):
        raise ParseError(f"message does not start with an MSH segment (starts {text[:12]!r})")
    if len(text) < 8:
        raise ParseError("MSH segment too short to hold its encoding characters", "MSH-2", 102)
    fs = text[3]
    if fs.isalnum() or fs.isspace():
        raise ParseError(f"MSH-1 field separator {fs!r} is not a valid separator", "MSH-1", 102)
    end = text.find(fs, 4)
    enc = text[4:end] if end >= 0 else text[4:]
    if len(enc) < 4 or len(enc) > 5 or len(set(enc[:4] + fs)) != 5 or any(
        c.isalnum() or c.isspace() for c in enc
    ):
        raise ParseError(
            f"MSH-2 encoding characters {enc!r} must be 4 distinct delimiters such as '^~\\&'",
            "MSH-2",
            102,
        )
    delimiters = Delimiters(field=fs, component=enc[0], repetition=enc[1], escape=enc[2],
                            subcomponent=enc[3])
    segments: list[Segment] = []
    for line in _SEGMENT_SPLIT.split(text):
        if not line.strip():
            continue
        parts = line.split(fs)
        name = parts[0]
        if not _SEGMENT_NAME.match(name):
            raise ParseError(f"segment {len(segments) + 1} has an invalid name {name[:10]!r}",
                             name[:3] or "?")
        if name == "MSH" and not segments:
            parts.insert(1, fs)
        segments.append(Segment(name, parts))
    msh = segments[0]
    for required, label in ((9, "message type"), (10, "message control ID"),
                            (11, "processing ID"), (12, "version ID")):
        if not msh.get(required).strip():
            raise ParseError(f"MSH-{required} ({label}) is empty", f"MSH-{required}", 101)
    return Message(segments, delimiters, codec)
