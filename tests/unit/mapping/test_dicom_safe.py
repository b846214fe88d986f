"""A backslash is a DICOM value delimiter: a mapped value keeps its value multiplicity.

The main test is generated from the shipped mapping files: every field of every message
mapping, through each of its paths, receives an HL7 ``\\E\\`` (a literal backslash), and the
events may hold a backslash only in LT, ST or UT values. A new attribute in a mapping file is
covered without editing this file.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.hl7 import charset
from broker.hl7.ack import Hl7Error, Hl7Reject
from broker.hl7.message import parse
from broker.hl7.path import Path as Hl7Path
from broker.mapping.dicom_safe import (
    BACKSLASH_ALLOWED,
    find_pn_delimiter,
    keyword_vr,
    pn_component,
    safe_items,
    safe_value,
)
from broker.mapping.engine import map_message
from broker.mapping.schema import MappingLoadError, load_mappings
from broker.mapping.specs import FieldSpec, MessageMapping
from broker.mapping.transforms import TRANSFORMS, TransformContext
from broker.model.orders import Event, OrderChange, PatientIdChange, PatientMerge, PatientUpdate

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = sorted((ROOT / "testdata" / "hl7").glob("*.hl7"))
MAPPINGS = load_mappings(ROOT / "mappings")
#: a component value with a literal backslash, escaped as HL7 writes it
B = "\\E\\"


def _sample_for(mm: MessageMapping) -> list[str]:
    for path in SAMPLES:
        text = charset.decode(path.read_bytes()).text
        lines = [s for s in re.split(r"\r\n|\r|\n", text) if s]
        fields = lines[0].split("|")
        if "^".join(fields[8].split("^")[:2]) in mm.types:
            return lines
    raise AssertionError(f"no sample in testdata/hl7 for {mm.types} ({mm.where})")


def _cases() -> Iterator[Any]:
    seen: set[int] = set()
    for mm in MAPPINGS.messages.values():
        if id(mm) in seen:
            continue
        seen.add(id(mm))
        for block in ("patient", "prior", "procedure", "steps"):
            for spec in getattr(mm, block):
                if spec.paths:
                    yield pytest.param(mm, spec, id=f"{mm.types[0]}:{block}.{spec.keyword}")


def _put(lines: list[str], path: Hl7Path, value: str) -> list[str]:
    """The message with ``value`` (raw HL7) at ``path`` in every segment the path names."""
    assert path.segment != "MSH"
    out = list(lines)
    if path.conditions:  # one segment that satisfies the (first) condition
        out = [s for s in out if not s.startswith(path.segment + "|")]
        cond = path.conditions[0]
        fields = [""] * max(cond.field, path.field)
        comps = [""] * (cond.component or 1)
        comps[-1] = cond.value
        fields[cond.field - 1] = "^".join(comps)
        out.append("|".join([path.segment, *fields]))
    targets = [i for i, s in enumerate(out) if s.startswith(path.segment + "|")]
    if not targets:
        out.append(path.segment)
        targets = [len(out) - 1]
    for i in targets:
        fields = out[i].split("|")
        fields += [""] * (path.field + 1 - len(fields))
        reps = fields[path.field].split("~")
        rep = (path.repetition or 1) - 1
        reps += [""] * (rep + 1 - len(reps))
        if path.component is None:
            reps[rep] = value
        else:
            comps = reps[rep].split("^")
            comps += [""] * (path.component - len(comps))
            if path.subcomponent is None:
                comps[path.component - 1] = value
            else:
                subs = comps[path.component - 1].split("&")
                subs += [""] * (path.subcomponent - len(subs))
                subs[path.subcomponent - 1] = value
                comps[path.component - 1] = "&".join(subs)
            reps[rep] = "^".join(comps)
        fields[path.field] = "~".join(reps) if path.repetition is not None else reps[rep]
        out[i] = "|".join(fields)
    return out


def _values(events: list[Event]) -> Iterator[tuple[str, str, Any]]:
    """(keyword, VR, value) of every string the events would store, sequence items too."""
    blocks: list[dict[str, Any]] = []
    for ev in events:
        if isinstance(ev, OrderChange):
            blocks += [ev.procedure.attrs, *(s.attrs for s in ev.procedure.steps)]
            if ev.patient:
                blocks.append(ev.patient.attrs)
        elif isinstance(ev, PatientMerge):
            blocks.append(ev.surviving.attrs)
        elif isinstance(ev, PatientIdChange | PatientUpdate):
            blocks.append(ev.patient.attrs)
    for attrs in blocks:
        for keyword, value in attrs.items():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict):
                    for sub, sub_value in item.items():
                        yield sub, keyword_vr(sub), sub_value
                else:
                    yield keyword, keyword_vr(keyword), item


#: a field with a backslash in each of its first six components and their subcomponents
INJECTED = "^".join(f"V{n}{B}{n}&S{B}{n}" for n in range(1, 7))


@pytest.mark.parametrize(("mm", "spec"), list(_cases()))
def test_a_backslash_never_adds_a_value(mm: MessageMapping, spec: FieldSpec) -> None:
    base = _sample_for(mm)
    reached = False
    for k, path in enumerate(spec.paths):
        lines = base
        for earlier in spec.paths[:k]:
            lines = _put(lines, earlier, "")
        value = INJECTED if path.component is None else f"V{B}1"
        lines = _put(lines, path, value)
        warnings: list[Hl7Error] = []
        try:
            events = map_message(parse("\r".join(lines) + "\r", "utf-8"), MAPPINGS, warnings)
        except Hl7Reject as exc:  # e.g. a date or UID with a backslash: refused, not stored
            assert [e.code for e in exc.errors] == [102], exc.errors
            reached = True
            continue
        for keyword, vr, item in _values(events):
            if isinstance(item, str) and "\\" in item:
                assert vr in BACKSLASH_ALLOWED, f"{keyword} ({vr}) = {item!r} from {path}"
                reached = reached or keyword == spec.keyword
        mine = [w for w in warnings if w.text.startswith(spec.keyword)]
        assert all(w.severity == "W" and w.location == path.text for w in mine)
        reached = reached or any("backslash" in w.text for w in mine)
    lookups = any(name == "lookup" for name, _fn, _p in spec.transforms)
    assert reached or lookups, f"{spec.keyword}: no path of {spec.where} reached the value"


def test_every_string_vr_the_mappings_produce_is_covered() -> None:
    vrs = {spec.vr for _mm, spec in (c.values for c in _cases())}
    assert {"PN", "LO", "SH", "CS", "LT", "SQ"} <= vrs


@pytest.mark.parametrize(("vr", "expected"), [
    ("PN", "O/BRIEN"), ("LO", "O/BRIEN"), ("SH", "O/BRIEN"), ("AE", "O/BRIEN"),
    ("UC", "O/BRIEN"), ("UR", "O/BRIEN"), ("CS", "O_BRIEN"),
    ("LT", "O\\BRIEN"), ("ST", "O\\BRIEN"), ("UT", "O\\BRIEN"),
])
def test_replacement_per_vr(vr: str, expected: str) -> None:
    assert safe_value(vr, "O\\BRIEN")[0] == expected


def test_sequence_items_use_the_vr_of_each_item_attribute() -> None:
    items, changed = safe_items("ScheduledProtocolCodeSequence", "SQ", [
        {"CodeValue": "A\\B", "CodingSchemeDesignator": "L", "CodeMeaning": "x\\y"}])
    assert items == [{"CodeValue": "A/B", "CodingSchemeDesignator": "L", "CodeMeaning": "x/y"}]
    assert changed == [("ScheduledProtocolCodeSequence > CodeValue", "SH"),
                       ("ScheduledProtocolCodeSequence > CodeMeaning", "LO")]


def test_the_warning_names_the_field_and_the_replacement() -> None:
    message = parse("MSH|^~\\&|RIS|HOSP|PACS|RAD|20240101||ADT^A08|1|P|2.5.1\r"
                    f"PID|||P1^^^HOSP||O{B}BRIEN^PAT")
    warnings: list[Hl7Error] = []
    (event,) = map_message(message, MAPPINGS, warnings)
    assert isinstance(event, PatientUpdate)
    assert event.patient.attrs["PatientName"] == "O/BRIEN^PAT"
    assert warnings == [Hl7Error(102, "PatientName: a backslash separates values of a DICOM "
                                 "PN; replaced by '/'", "PID-5[*]", "W")]


def test_a_constant_with_a_backslash_is_a_load_error(tmp_path: Path) -> None:
    folder = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", folder)
    orders = folder / "orders.yaml"
    text = orders.read_text(encoding="utf-8")
    old = "        Modality: OBR-24\n"
    assert text.count(old) == 1
    orders.write_text(text.replace(old, old + "        ScheduledStationName: {value: 'A\\B'}\n"),
                      encoding="utf-8")
    line = next(i for i, s in enumerate(orders.read_text("utf-8").splitlines(), 1)
                if "ScheduledStationName" in s)
    with pytest.raises(MappingLoadError) as exc:
        load_mappings(folder)
    assert f"{orders}:{line}: ScheduledStationName: a backslash separates values of a DICOM SH;" \
           " write several values as a YAML list" in exc.value.errors


def test_a_station_rule_setting_a_backslash_is_a_load_error(tmp_path: Path) -> None:
    folder = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", folder)
    (folder / "stations.yaml").write_text(
        "station_rules:\n  - when: {Modality: CT}\n    set: {ScheduledStationAETitle: 'CT\\1'}\n",
        encoding="utf-8")
    with pytest.raises(MappingLoadError) as exc:
        load_mappings(folder)
    assert exc.value.errors == [
        f"{folder / 'stations.yaml'}:2: station rule: ScheduledStationAETitle: a backslash "
        "separates values of a DICOM AE; write several values as a YAML list"]


# -- PN delimiters ('^' components, '=' groups) inside one HL7 name component ----------------


@pytest.mark.parametrize(("pid5", "stored", "found"), [
    ("SMITH\\S\\JONES^ANNA", "SMITH/JONES^ANNA", "'^'"),  # family name "SMITH^JONES"
    ("SMITH=JONES^ANNA", "SMITH/JONES^ANNA", "'='"),  # '=' is plain text in HL7
    ("SMITH=JO\\S\\NES^ANNA", "SMITH/JO/NES^ANNA", "'^' and '='"),
    ("SMITH^ANNA^M=R", "SMITH^ANNA^M/R", "'='"),
])
def test_a_pn_delimiter_inside_a_name_component_is_replaced_and_warned(
        pid5: str, stored: str, found: str) -> None:
    message = parse("MSH|^~\\&|RIS|HOSP|PACS|RAD|20240101||ADT^A08|1|P|2.5.1\r"
                    f"PID|||P1^^^HOSP||{pid5}")
    warnings: list[Hl7Error] = []
    (event,) = map_message(message, MAPPINGS, warnings)
    assert isinstance(event, PatientUpdate)
    assert event.patient.attrs["PatientName"] == stored
    assert warnings == [Hl7Error(102, f"PatientName: {found} inside a name component would be "
                                 "a DICOM PN delimiter; replaced by '/'", "PID-5[*]", "W")]


def test_name_groups_from_repetitions_are_kept() -> None:
    """Only a delimiter inside a component is replaced: repetitions still make the groups."""
    message = parse("MSH|^~\\&|RIS|HOSP|PACS|RAD|20240101||ADT^A08|1|P|2.5.1\r"
                    "PID|||P1^^^HOSP||YAMADA^TARO^^^^^L^A~山田^太郎^^^^^L^I")
    warnings: list[Hl7Error] = []
    (event,) = map_message(message, MAPPINGS, warnings)
    assert isinstance(event, PatientUpdate)
    assert event.patient.attrs["PatientName"] == "YAMADA^TARO=山田^太郎"
    assert warnings == []


@pytest.mark.parametrize(("transform", "raw", "expected"), [
    ("physician_name", "5101^NELL\\S\\NOLL^FRED=DY", "NELL/NOLL^FRED/DY"),
    ("staff_name", "5101^NELL=NOLL^FRED", "NELL/NOLL^FRED"),
    ("staff_name", "NELL\\S\\NOLL^FRED", "NELL/NOLL^FRED"),
    ("staff_name", "5101&NELL=NOLL&FRED", "NELL/NOLL^FRED"),
])
def test_staff_names_replace_pn_delimiters_too(transform: str, raw: str, expected: str) -> None:
    ctx = TransformContext(parse("MSH|^~\\&|RIS|HOSP|PACS|RAD|20240101||ORM^O01|1|P|2.3.1"), {})
    assert TRANSFORMS[transform][0]([raw], ctx, None) == [expected]
    assert ctx.notes and ctx.notes[0].endswith("would be a DICOM PN delimiter; replaced by '/'")


@pytest.mark.parametrize("text", ["SMITH^", "=JONES", "A^B=C"])
def test_the_quick_look_finds_each_pn_delimiter(text: str) -> None:
    """The one search a whole name gets before any per-component work (the usual name has no
    delimiter and skips it) finds every delimiter pn_component replaces."""
    assert find_pn_delimiter(text) is not None
    assert pn_component(text)[1]


def test_a_name_without_pn_delimiters_is_kept_as_it_is() -> None:
    assert find_pn_delimiter("O'BRIEN-SMITH ANNA/MARIA") is None
    ctx = TransformContext(parse("MSH|^~\\&|RIS|HOSP|PACS|RAD|20240101||ORM^O01|1|P|2.3.1"), {})
    assert TRANSFORMS["physician_name"][0](["5101^NELL-NOLL^FRED^^JR^DR"], ctx, None) == [
        "NELL-NOLL^FRED^^DR^JR"]
    assert ctx.notes == []


def test_an_id_component_is_not_a_name() -> None:
    ctx = TransformContext(parse("MSH|^~\\&|RIS|HOSP|PACS|RAD|20240101||ORM^O01|1|P|2.3.1"), {})
    assert TRANSFORMS["physician_name"][0](["51=01^NELL^FRED"], ctx, None) == ["NELL^FRED"]
    assert ctx.notes == []
