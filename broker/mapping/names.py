"""Which PN component group (alphabetic, ideographic, phonetic) each XPN repetition fills.

XPN-8 (name representation code, HL7 table 4000: A alphabetic, I ideographic, P phonetic)
decides when the sender gives it. Without it the policy does:

- ``script`` (the default): by the characters of the name, following the examples of
  DICOM PS3.5 Annex H (Japanese: kanji ideographic, kana phonetic), I (Korean: hanja
  ideographic, hangul phonetic) and J (Chinese: hanzi ideographic). A name with any Han
  character is ideographic; else one with kana or hangul is phonetic; else alphabetic.
- ``position``: the first kept repetition is alphabetic, the second ideographic, the third
  phonetic.

A name sent once, without XPN-8, stays in the first (alphabetic) group whatever its script:
there is nothing to tell apart, and a modality that shows only the first group still shows it.

A repetition whose XPN-7 (name type) is given and not one of ``name_types`` (default: L,
legal) is another name of the patient (maiden, alias, display …), not the same name in
another script: it is left out. Each left-out repetition yields a note, without the name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GROUPS = ("A", "I", "P")
LABELS = {"A": "alphabetic", "I": "ideographic", "P": "phonetic"}
POLICIES = ("script", "position")

_HAN = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3FFFF),
        (0x3005, 0x3007))
_KANA_HANGUL = ((0x3040, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F), (0x1100, 0x11FF),
                (0x3130, 0x318F), (0xA960, 0xA97F), (0xAC00, 0xD7FF))


@dataclass(frozen=True, slots=True)
class NamePolicy:
    groups: str = "script"
    name_types: tuple[str, ...] = ("L",)


@dataclass(frozen=True, slots=True)
class Repetition:
    index: int  # 1-based position in the field
    name: str  # the PN component group text
    name_type: str  # XPN-7, upper case, '' when absent
    code: str  # XPN-8, upper case, '' when absent


DEFAULT = NamePolicy()


def param_error(param: Any) -> str | None:
    """Why a ``person_name`` parameter is invalid, or None."""
    if param is None:
        return None
    if not isinstance(param, dict):
        return "person_name takes {groups: script|position, name_types: [L, …]}"
    unknown = sorted(str(k) for k in param if k not in ("groups", "name_types"))
    if unknown:
        return f"person_name: unknown option {unknown[0]!r} (groups, name_types)"
    if param.get("groups", "script") not in POLICIES:
        return f"person_name: groups must be {' or '.join(POLICIES)}, not {param['groups']!r}"
    types = param.get("name_types", ["L"])
    if not isinstance(types, list) or not all(isinstance(t, str) and t for t in types):
        return "person_name: name_types must be a list of XPN-7 codes such as [L]"
    return None


def policy_of(param: Any) -> NamePolicy:
    """The policy a (validated) ``person_name`` parameter names."""
    if not param:
        return DEFAULT
    return NamePolicy(str(param.get("groups", "script")),
                      tuple(str(t).upper() for t in param.get("name_types", ["L"])))


def _in(code: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(low <= code <= high for low, high in ranges)


def script_group(text: str) -> str:
    """The component group the characters of ``text`` belong in (A, I or P)."""
    points = [ord(ch) for ch in text]
    if any(_in(p, _HAN) for p in points):
        return "I"
    if any(_in(p, _KANA_HANGUL) for p in points):
        return "P"
    return "A"


def place(reps: list[Repetition], policy: NamePolicy) -> tuple[dict[str, str], list[str]]:
    """The text of each filled group, and a note for every repetition left out."""
    notes: list[str] = []
    kept = [r for r in reps if not r.name_type or r.name_type in policy.name_types]
    if not kept and reps:
        kept = reps[:1]  # no legal name at all: the first name is still the patient's
    for r in reps:
        if r not in kept:
            notes.append(f"repetition {r.index} left out: its name type {r.name_type!r} "
                         f"(XPN-7) is not one of {', '.join(policy.name_types)}")
    wanted: list[tuple[Repetition, str | None, str]] = []
    for position, r in enumerate(kept):
        if r.code in GROUPS:
            wanted.append((r, r.code, "XPN-8"))
        elif len(kept) == 1:
            wanted.append((r, "A", "being the only name"))
        elif policy.groups == "position":
            wanted.append((r, GROUPS[position] if position < 3 else None, "its position"))
        else:  # script
            wanted.append((r, script_group(r.name), "its characters"))
    # a group named by XPN-8 is never taken by a guessed repetition
    wanted.sort(key=lambda w: w[2] != "XPN-8")
    groups: dict[str, str] = {}
    holder: dict[str, int] = {}
    for r, group, why in wanted:
        if group is None:
            notes.append(f"repetition {r.index} left out: the position policy fills only "
                         "three groups (alphabetic, ideographic, phonetic)")
        elif group in groups:
            notes.append(f"repetition {r.index} left out: by {why} it is {LABELS[group]}, "
                         f"a group repetition {holder[group]} already fills")
        else:
            groups[group], holder[group] = r.name, r.index
    notes.sort(key=lambda n: int(n.split()[1]))
    return groups, notes
