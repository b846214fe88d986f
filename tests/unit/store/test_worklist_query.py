"""Worklist matching in SQL (broker.store.worklist_query) against a plain Python reference.

The reference matcher below is written from PS3.4 C.2.2.2 / Annex K, not from the SQL:
single value (exact, case-sensitive), wildcard ``*``/``?`` (everything else literal), UID
lists, DA/TM ranges (inclusive, either end open), SPS Start Date + Time as ONE date-time
range, a Start Time given alone as a time-of-day range, the Scheduled Station AE Title
matched against each of a step's titles, and the hidden statuses.  Only the PN policy is
taken from the broker (``pn_matches`` *is* the stated policy).

Generated steps have both an SPS Start Date and Time or neither (both are Type 1 in the SPS
sequence); what a date without a time should match is left open.
"""

from __future__ import annotations

import re
import sqlite3
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from broker.dicom.mwl import parse_identifier
from broker.dicom.status import DimseFailure
from broker.model.orders import PatientKey, StepStatus
from broker.model.worklist import Match, WorklistQuery, pn_matches
from broker.store.orders import OrderRepo
from broker.store.sqlite.connection import connect, migrate
from broker.store.sqlite.readers import open_reader, search
from broker.store.worklist_query import (
    COLUMNS,
    MATCHABLE,
    PN_KEYS,
    START_DATE,
    START_TIME,
    STATION,
    UPS_ONLY,
)

#: shown only when the query has a value for SPS Status (independent of broker.model.worklist)
HIDDEN = frozenset({"STARTED", "COMPLETED", "DISCONTINUED", "CANCELED"})


# -- the worklist items ------------------------------------------------------------------------


@dataclass
class StepItem:
    sps_id: str
    status: StepStatus = StepStatus.SCHEDULED
    date: str = ""
    time: str = ""
    modality: str = "CT"
    stations: list[str] = field(default_factory=list)
    performing: str = ""
    station_name: str = ""
    location: str = ""

    def attrs(self) -> dict[str, Any]:
        return {
            "ScheduledProcedureStepID": self.sps_id,
            "Modality": self.modality,
            "ScheduledProcedureStepStartDate": self.date,
            "ScheduledProcedureStepStartTime": self.time,
            "ScheduledStationAETitle": list(self.stations),
            "ScheduledPerformingPhysicianName": self.performing,
            "ScheduledStationName": self.station_name,
            "ScheduledProcedureStepLocation": self.location,
        }


@dataclass
class ProcedureItem:
    study_uid: str
    steps: list[StepItem]
    accession: str = ""
    requested_procedure_id: str = ""
    admission_id: str = ""
    referring: str = ""
    requesting: str = ""
    placer: str = ""
    filler: str = ""

    def attrs(self) -> dict[str, Any]:
        return {
            "StudyInstanceUID": self.study_uid,
            "AccessionNumber": self.accession,
            "RequestedProcedureID": self.requested_procedure_id,
            "AdmissionID": self.admission_id,
            "ReferringPhysicianName": self.referring,
            "RequestingPhysician": self.requesting,
            "PlacerOrderNumberImagingServiceRequest": self.placer,
            "FillerOrderNumberImagingServiceRequest": self.filler,
        }


@dataclass
class PatientItem:
    patient_id: str
    procedures: list[ProcedureItem]
    issuer: str = ""
    name: str = ""
    birth_date: str = ""
    sex: str = ""

    def attrs(self) -> dict[str, Any]:
        return {"PatientID": self.patient_id, "IssuerOfPatientID": self.issuer,
                "PatientName": self.name, "PatientBirthDate": self.birth_date,
                "PatientSex": self.sex}


@dataclass(frozen=True)
class Row:
    """One step as the reference sees it: keyword → stored text, plus stations and start."""

    key: tuple[str, str]  # (Study Instance UID, SPS ID)
    values: dict[str, str]
    stations: tuple[str, ...]
    date: str
    time: str

    @property
    def start(self) -> str:
        """YYYYMMDDHHMMSS (seconds padded with zeros) or '' without a date."""
        return self.date + (self.time + "000000")[:6] if self.date else ""


def rows_of(patients: Iterable[PatientItem]) -> list[Row]:
    rows = []
    for pt in patients:
        for proc in pt.procedures:
            for step in proc.steps:
                values = {
                    "PatientID": pt.patient_id, "IssuerOfPatientID": pt.issuer,
                    "PatientName": pt.name, "PatientBirthDate": pt.birth_date,
                    "PatientSex": pt.sex, "AccessionNumber": proc.accession,
                    "RequestedProcedureID": proc.requested_procedure_id,
                    "StudyInstanceUID": proc.study_uid, "AdmissionID": proc.admission_id,
                    "ReferringPhysicianName": proc.referring,
                    "RequestingPhysician": proc.requesting,
                    "PlacerOrderNumberImagingServiceRequest": proc.placer,
                    "FillerOrderNumberImagingServiceRequest": proc.filler,
                    "Modality": step.modality, "ScheduledProcedureStepID": step.sps_id,
                    "ScheduledProcedureStepStatus": step.status.value,
                    "ScheduledPerformingPhysicianName": step.performing,
                    "ScheduledStationName": step.station_name,
                    "ScheduledProcedureStepLocation": step.location,
                }
                rows.append(Row((proc.study_uid, step.sps_id), values, tuple(step.stations),
                                step.date, step.time))
    return rows


def store(path: Path, patients: Iterable[PatientItem]) -> sqlite3.Connection:
    """Write the items with the broker's own OrderRepo, in one transaction; the writer stays
    open."""
    conn = connect(path, synchronous="OFF")
    migrate(conn)
    repo = OrderRepo(conn, now=0.0)
    conn.execute("BEGIN")
    for pt in patients:
        patient_fk = repo.insert_patient(PatientKey(pt.patient_id, pt.issuer), pt.attrs())
        assert patient_fk is not None
        for proc in pt.procedures:
            procedure_fk = repo.insert_procedure(patient_fk, proc.attrs(), "NW")
            assert procedure_fk is not None
            for step in proc.steps:
                repo.insert_steps(procedure_fk, [step.attrs()], step.status)
    conn.execute("COMMIT")
    return conn


class Worklist:
    """A worklist file in a temporary directory, with a writer and a reader connection."""

    def __init__(self, patients: list[PatientItem]) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="mwl-prop-")
        self.path = Path(self._tmp.name) / "worklist.sqlite"
        self.rows = rows_of(patients)
        self.writer = store(self.path, patients)
        self.reader = open_reader(self.path)

    def found(self, query: WorklistQuery) -> list[tuple[str, str]]:
        return [(r.procedure["StudyInstanceUID"], r.step["ScheduledProcedureStepID"])
                for r in search(self.reader, query)]

    def __enter__(self) -> Worklist:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reader.close()
        self.writer.close()
        self._tmp.cleanup()


# -- the reference matcher -----------------------------------------------------------------------


def wildcard(pattern: str, value: str) -> bool:
    """DICOM wild card matching, written out: '*' any run, '?' any one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


def match_value(match: Match, stored: str) -> bool:
    if match.keyword in PN_KEYS:  # the stated PN policy, for every kind a PN key can have
        return pn_matches(stored, match.value)
    if match.kind == "single":
        return stored == match.value
    if match.kind == "wildcard":
        return wildcard(match.value, stored)
    if match.kind == "list":
        return stored in match.values
    if match.kind == "range":
        return (stored != "" and (not match.low or stored >= match.low)
                and (not match.high or stored <= match.high))
    raise AssertionError(f"unexpected kind {match.kind}")


def _bounds(match: Match) -> tuple[str, str]:
    return (match.value, match.value) if match.kind == "single" else (match.low, match.high)


def _time_at_least(time: str, bound: str) -> bool:
    """A stored HHMMSS at or after a TM bound given to its own precision (HH, HHMM, …)."""
    bound = bound.split(".")[0]
    return time[:len(bound)] >= bound


def _time_at_most(time: str, bound: str) -> bool:
    bound = bound.split(".")[0]
    return time[:len(bound)] <= bound


def start_matches(row: Row, date: Match | None, time: Match | None) -> bool:
    if date is None and time is None:
        return True
    if not row.date:
        return False
    stored_time = (row.time + "000000")[:6]
    t_lo, t_hi = _bounds(time) if time is not None else ("", "")
    if date is None:  # a time alone: a time-of-day range on any day
        return ((not t_lo or _time_at_least(stored_time, t_lo))
                and (not t_hi or _time_at_most(stored_time, t_hi)))
    d_lo, d_hi = _bounds(date)
    # one date-time range: (d_lo, t_lo) .. (d_hi, t_hi); an open date end is open whatever
    # the time says
    if d_lo and (row.date < d_lo or (row.date == d_lo and t_lo
                                     and not _time_at_least(stored_time, t_lo))):
        return False
    return not (d_hi and (row.date > d_hi or (row.date == d_hi and t_hi
                                              and not _time_at_most(stored_time, t_hi))))


def station_matches(row: Row, match: Match | None) -> bool:
    if match is None:
        return True
    if match.kind == "single":
        return match.value in row.stations
    if not match.value.strip("*"):  # PS3.4 C.2.2.2.4: '*' also matches a zero-length value
        return True
    return any(wildcard(match.value, s) for s in row.stations)


def reference(rows: list[Row], query: WorklistQuery) -> set[tuple[str, str]]:
    by_keyword = {m.keyword: m for m in query.matches}
    out = set()
    for row in rows:
        if not query.include_hidden and row.values["ScheduledProcedureStepStatus"] in HIDDEN:
            continue
        if not all(match_value(m, row.values[m.keyword]) for m in query.matches
                   if m.keyword in COLUMNS):
            continue
        if not station_matches(row, by_keyword.get(STATION)):
            continue
        if not start_matches(row, by_keyword.get(START_DATE), by_keyword.get(START_TIME)):
            continue
        out.add(row.key)
    return out


# -- strategies --------------------------------------------------------------------------------

ID_CHARS = "AaBb1[]é*"
LATIN = "DdOoEeJjßÉé "
IDEOGRAPHIC = "山田太郎"
PHONETIC = "やまだたろう"
START_DATES = ("20261121", "20261122", "20261123", "20261124")
STORED_TIMES = ("000000", "055959", "0600", "060000", "060030", "120000", "1230", "215959",
                "220000", "235959")
QUERY_TIMES = ("00", "06", "0600", "060000", "0559", "12", "1200", "120000", "1230", "22",
               "2200", "220000", "2359", "235959")
BIRTH_DATES = ("19700101", "19851231", "20000229")
STATIONS = ("CT1", "CT2", "MR1", "ct1", "A[1]")
STATUSES = tuple(s.value for s in StepStatus)


def text(alphabet: str = ID_CHARS, max_size: int = 3) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, max_size=max_size)


@st.composite
def person_names(draw: st.DrawFn) -> str:
    """A PN: 1-3 components, sometimes with an ideographic (and phonetic) group."""
    def group(alphabet: str, min_size: int = 0) -> str:
        comps = draw(st.lists(st.text(alphabet=alphabet, min_size=min_size, max_size=3),
                              min_size=1, max_size=3))
        return "^".join(comps).strip()

    shape = draw(st.sampled_from(["alpha", "alpha", "ideo", "ideo+phon", "no-alpha", "empty"]))
    if shape == "empty":
        return ""
    alpha = "" if shape == "no-alpha" else group(LATIN)
    if shape == "alpha":
        return alpha
    groups = [alpha, group(IDEOGRAPHIC, 1)]
    if shape == "ideo+phon":
        groups.append(group(PHONETIC, 1))
    return "=".join(groups)


@st.composite
def steps(draw: st.DrawFn) -> StepItem:
    dated = draw(st.booleans()) or draw(st.booleans())
    return StepItem(
        sps_id=draw(text()),
        status=draw(st.sampled_from(list(StepStatus))),
        date=draw(st.sampled_from(START_DATES)) if dated else "",
        time=draw(st.sampled_from(STORED_TIMES)) if dated else "",
        modality=draw(st.sampled_from(["CT", "MR", "ct", "US", ""])),
        stations=draw(st.lists(st.sampled_from(STATIONS), max_size=2, unique=True)),
        performing=draw(person_names()),
        station_name=draw(text()),
        location=draw(text()),
    )


@st.composite
def procedures(draw: st.DrawFn) -> ProcedureItem:
    return ProcedureItem(
        study_uid="",  # numbered when the patients are drawn
        steps=draw(st.lists(steps(), min_size=1, max_size=3, unique_by=lambda s: s.sps_id)),
        accession=draw(text()),
        requested_procedure_id=draw(text()),
        admission_id=draw(text()),
        referring=draw(person_names()),
        requesting=draw(person_names()),
        placer=draw(text()),
        filler=draw(text()),
    )


@st.composite
def worklists(draw: st.DrawFn) -> list[PatientItem]:
    patients = draw(st.lists(
        st.builds(PatientItem, patient_id=text(max_size=2),
                  procedures=st.lists(procedures(), min_size=1, max_size=2),
                  issuer=st.sampled_from(["", "HOSP", "hosp"]), name=person_names(),
                  birth_date=st.sampled_from(("", *BIRTH_DATES)),
                  sex=st.sampled_from(["", "M", "F", "O"])),
        min_size=1, max_size=4, unique_by=lambda p: (p.patient_id, p.issuer)))
    n = 0
    for pt in patients:
        for proc in pt.procedures:
            n += 1
            proc.study_uid = f"1.2.826.0.1.{n}"
    return patients


def _recase(data: st.DataObject, value: str) -> str:
    how = data.draw(st.sampled_from(["keep", "keep", "keep", "upper", "lower", "swap"]))
    return {"keep": value, "upper": value.upper(), "lower": value.lower(),
            "swap": value.swapcase()}[how]


def _pattern_from(data: st.DataObject, value: str, alphabet: str) -> str:
    """A wild card pattern that often matches ``value``: a run replaced by '*', a '?' …"""
    if data.draw(st.booleans()) or not value:
        pattern = data.draw(st.text(alphabet=alphabet + "*?", max_size=4))
    else:
        i = data.draw(st.integers(0, len(value)))
        j = data.draw(st.integers(i, len(value)))
        pattern = value[:i] + data.draw(st.sampled_from(["*", "?", "", "**"])) + value[j:]
        if pattern and data.draw(st.booleans()):
            k = data.draw(st.integers(0, len(pattern) - 1))
            pattern = pattern[:k] + "?" + pattern[k + 1:]
    if "*" not in pattern and "?" not in pattern:
        pattern += "*"
    return pattern


def _pn_group_query(data: st.DataObject, group: str, alphabet: str) -> str:
    comps = group.split("^")
    out = []
    for comp in comps[:data.draw(st.integers(1, max(1, len(comps))))]:
        how = data.draw(st.sampled_from(["keep", "recase", "wild", "empty", "star"]))
        if how == "recase":
            comp = _recase(data, comp)
        elif how == "wild":
            comp = _pattern_from(data, _recase(data, comp), alphabet)
        elif how == "empty":
            comp = ""
        elif how == "star":
            comp = "*"
        out.append(comp)
    return "^".join(out)


def pn_query(data: st.DataObject, keyword: str, stored: list[str]) -> Match:
    """A PN key: often derived from a stored name (a component group, components left out,
    case changed, wild cards), or a group-by-group query with '='."""
    name = data.draw(st.sampled_from([n for n in stored if n] or [""]))
    groups = name.split("=")
    shape = data.draw(st.sampled_from(["alpha", "any-group", "any-group", "by-group",
                                       "random"]))
    if shape == "alpha":
        value = _pn_group_query(data, groups[0], LATIN)
    elif shape == "any-group":
        value = _pn_group_query(data, data.draw(st.sampled_from(groups)),
                                LATIN + IDEOGRAPHIC + PHONETIC)
    elif shape == "by-group":
        parts = []
        for i, g in enumerate(groups):
            use = data.draw(st.booleans())
            parts.append(_pn_group_query(data, g, (LATIN, IDEOGRAPHIC, PHONETIC)[i])
                         if use else "")
        if len(parts) == 1:
            parts.append("")
        value = "=".join(parts)
    else:
        alphabet = LATIN + IDEOGRAPHIC + PHONETIC[:2] + "^*?="
        value = data.draw(st.text(alphabet=alphabet, min_size=1, max_size=6))
    if not value.strip("^= "):
        value = "?*"
    if "*" in value or "?" in value:
        return Match(keyword, "wildcard", value)
    return Match(keyword, data.draw(st.sampled_from(["single", "name"])), value)


def text_query(data: st.DataObject, keyword: str, stored: list[str]) -> Match:
    value = _recase(data, data.draw(st.sampled_from(stored)))
    if data.draw(st.booleans()):
        pattern = _pattern_from(data, value, ID_CHARS)
        return Match(keyword, "wildcard", "**" if pattern == "*" else pattern)
    if not value or "*" in value or "?" in value:  # '' is universal; '*' would be a wildcard
        value = data.draw(st.sampled_from(["A", "b", "[", "é", "CT", "SCHEDULED"]))
    return Match(keyword, "single", value)


def range_query(data: st.DataObject, keyword: str, pool: tuple[str, ...]) -> Match:
    if data.draw(st.booleans()):
        return Match(keyword, "single", data.draw(st.sampled_from(pool)))
    low = data.draw(st.sampled_from(("", *pool)))
    high = data.draw(st.sampled_from(("", *pool)))
    if not low and not high:
        low = pool[0]
    return Match(keyword, "range", low=low, high=high)


def draw_match(data: st.DataObject, keyword: str, rows: list[Row]) -> Match:
    stored = [r.values[keyword] for r in rows]
    if keyword == "StudyInstanceUID":
        pool = [*sorted(set(stored)), "1.2.826.0.1.999"]
        values = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True))
        if len(values) == 1:
            return Match(keyword, "single", values[0])
        return Match(keyword, "list", values=tuple(values))
    if keyword == "PatientBirthDate":
        return range_query(data, keyword, BIRTH_DATES)
    if keyword in PN_KEYS:
        return pn_query(data, keyword, stored)
    if keyword == "ScheduledProcedureStepStatus":
        stored = [*stored, *STATUSES]
    return text_query(data, keyword, stored)


#: every matching column, the PN keys, dates, UIDs and the status more often than the rest
WEIGHTED_KEYWORDS = (*sorted(set(COLUMNS) - UPS_ONLY), *sorted(PN_KEYS), *["PatientName"] * 5,
                     "PatientBirthDate", "PatientBirthDate", "StudyInstanceUID",
                     "ScheduledProcedureStepStatus")


def draw_query(data: st.DataObject, rows: list[Row]) -> WorklistQuery:
    if data.draw(st.integers(0, 2)) == 0:  # one key alone, every status: each rule on its own
        keyword = data.draw(st.sampled_from(WEIGHTED_KEYWORDS))
        return WorklistQuery([draw_match(data, keyword, rows)], include_hidden=True)
    keywords = data.draw(st.lists(st.sampled_from(WEIGHTED_KEYWORDS), max_size=2, unique=True))
    matches = [draw_match(data, k, rows) for k in keywords]
    start = data.draw(st.sampled_from(["none", "none", "date", "date+time", "time"]))
    if "date" in start:
        matches.append(range_query(data, START_DATE, START_DATES))
    if "time" in start:
        matches.append(range_query(data, START_TIME, QUERY_TIMES))
    station = data.draw(st.sampled_from(["none", "none", "single", "wildcard"]))
    if station == "single":
        matches.append(Match(STATION, "single", data.draw(st.sampled_from([*STATIONS, "XX"]))))
    elif station == "wildcard":
        pattern = data.draw(st.sampled_from(
            ["CT*", "C?1", "*1", "?T?", "A[*", "*]", "c*", "MR?", "*[1]", "*T*", "A[?]",
             "**"]))
        matches.append(Match(STATION, "wildcard", pattern))
    matches = list(data.draw(st.permutations(matches)))
    has_status = "ScheduledProcedureStepStatus" in keywords
    include_hidden = data.draw(st.booleans()) if not has_status else data.draw(
        st.sampled_from([True, True, False]))
    return WorklistQuery(matches, include_hidden)


# -- the property ---------------------------------------------------------------------------------


def test_generated_keywords_cover_matchable() -> None:
    assert (set(COLUMNS) | {START_DATE, START_TIME, STATION}) - UPS_ONLY == MATCHABLE


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(patients=worklists(), data=st.data())
def test_search_matches_reference(patients: list[PatientItem], data: st.DataObject) -> None:
    with Worklist(patients) as wl:
        for _ in range(data.draw(st.integers(1, 6), label="queries")):
            query = draw_query(data, wl.rows)
            note(f"query: {query!r}")
            found = wl.found(query)
            assert len(found) == len(set(found)), "a step was returned twice"
            expected = reference(wl.rows, query)
            event("found: " + ("none" if not expected else "all" if len(expected) == len(
                wl.rows) else "some"))
            assert set(found) == expected
            starts = {r.key: r.start for r in wl.rows}
            order = [starts[k] for k in found]
            assert order == sorted(order), "not earliest start first"


# -- explicit cases ------------------------------------------------------------------------------


def one_patient(*procs: ProcedureItem, name: str = "DOE^JOHN", pid: str = "P1"
                ) -> PatientItem:
    return PatientItem(pid, list(procs), name=name)


def proc(uid: str, *step_items: StepItem, **kw: Any) -> ProcedureItem:
    return ProcedureItem(uid, list(step_items), **kw)


def q(*matches: Match, include_hidden: bool = False) -> WorklistQuery:
    return WorklistQuery(list(matches), include_hidden)


def sps(found: list[tuple[str, str]]) -> set[str]:
    return {s for _, s in found}


def test_glob_metacharacters_are_literal() -> None:
    patients = [one_patient(
        proc("1.1", StepItem("S1", stations=["A[1]"]), accession="A[1]B"),
        proc("1.2", StepItem("S2", stations=["A1"]), accession="A1B"),
        proc("1.3", StepItem("S3", stations=["A]"]), accession="A]B"),
    )]
    with Worklist(patients) as wl:
        def check(query: WorklistQuery, expected: set[str]) -> None:
            assert sps(wl.found(query)) == expected == sps(reference(wl.rows, query))

        check(q(Match("AccessionNumber", "single", "A[1]B")), {"S1"})
        check(q(Match("AccessionNumber", "wildcard", "A[1]*")), {"S1"})  # not GLOB's [1]
        check(q(Match("AccessionNumber", "wildcard", "A[?]B")), {"S1"})
        check(q(Match("AccessionNumber", "wildcard", "A]*")), {"S3"})
        check(q(Match("AccessionNumber", "wildcard", "*]*")), {"S1", "S3"})
        check(q(Match("AccessionNumber", "wildcard", "A[]B*")), set())
        check(q(Match(STATION, "wildcard", "A[*")), {"S1"})
        check(q(Match(STATION, "single", "A[1]")), {"S1"})
        check(q(Match(STATION, "wildcard", "A[1?")), {"S1"})


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_wildcard_on_a_non_wildcard_vr() -> None:
    """UI and DA do not take wild cards: '*' there is literal (UI) or refused (DA)."""
    patients = [one_patient(proc("1.2.3", StepItem("S1", date="20261122", time="1000")))]

    def identifier(**values: str) -> Dataset:
        ds = Dataset()
        step = Dataset()
        for keyword, value in values.items():
            setattr(step if keyword.startswith("ScheduledProcedureStep") else ds, keyword,
                    value)
        ds.ScheduledProcedureStepSequence = [step]
        return ds

    parsed = parse_identifier(identifier(StudyInstanceUID="1.2.*"))
    assert parsed.query.matches == [Match("StudyInstanceUID", "single", "1.2.*")]
    with Worklist(patients) as wl:
        assert wl.found(parsed.query) == []
        assert wl.found(q(Match("StudyInstanceUID", "single", "1.2.3"))) == [("1.2.3", "S1")]
    for bad in ("2026112*", "202611??"):
        with pytest.raises(DimseFailure) as info:
            parse_identifier(identifier(ScheduledProcedureStepStartDate=bad))
        assert info.value.status == 0xC000
    with pytest.raises(DimseFailure) as info:
        parse_identifier(identifier(ScheduledProcedureStepStartTime="12*"))
    assert info.value.status == 0xC000


DAYS = [StepItem(f"S{d}", date=f"202611{d}", time="120000") for d in (21, 22, 23, 24)]


@pytest.mark.parametrize(("match", "expected"), [
    (Match(START_DATE, "range", low="20261123"), {"S23", "S24"}),
    (Match(START_DATE, "range", high="20261122"), {"S21", "S22"}),
    (Match(START_DATE, "range", low="20261122", high="20261123"), {"S22", "S23"}),
    (Match(START_DATE, "range", low="20261123", high="20261122"), set()),
    (Match(START_DATE, "single", "20261124"), {"S24"}),
    (Match("PatientBirthDate", "range", low="19700101"), {"S21", "S22", "S23", "S24"}),
    (Match("PatientBirthDate", "range", high="19691231"), set()),
])
def test_date_range_open_at_either_end(match: Match, expected: set[str]) -> None:
    patients = [PatientItem("P1", [proc("1.1", *DAYS)], birth_date="19700101"),
                PatientItem("P2", [proc("1.2", StepItem("U1"))])]  # no date, no birth date
    with Worklist(patients) as wl:
        assert sps(wl.found(q(match))) == expected == sps(reference(wl.rows, q(match)))


NIGHT = [StepItem("late-21", date="20261121", time="230000"),
         StepItem("early-22", date="20261122", time="210000"),
         StepItem("late-22", date="20261122", time="220000"),
         StepItem("midnight", date="20261123", time="000000"),
         StepItem("dawn-23", date="20261123", time="055959"),
         StepItem("six-23", date="20261123", time="0600"),
         StepItem("after-23", date="20261123", time="060100"),
         StepItem("noon-23", date="20261123", time="120000"),
         StepItem("late-23", date="20261123", time="230000"),
         StepItem("no-start")]


@pytest.mark.parametrize(("matches", "expected"), [
    # 20261122 2200 .. 20261123 0600 as one range: 2200 on the first day, 0600 on the last
    ((Match(START_DATE, "range", low="20261122", high="20261123"),
      Match(START_TIME, "range", low="2200", high="0600")),
     {"late-22", "midnight", "dawn-23", "six-23"}),
    ((Match(START_DATE, "range", low="20261122", high="20261123"),
      Match(START_TIME, "range", low="220000", high="060000")),
     {"late-22", "midnight", "dawn-23", "six-23"}),
    ((Match(START_DATE, "range", low="20261122"), Match(START_TIME, "range", low="2200")),
     {"late-22", "midnight", "dawn-23", "six-23", "after-23", "noon-23", "late-23"}),
    ((Match(START_DATE, "range", high="20261123"), Match(START_TIME, "range", high="0600")),
     {"late-21", "early-22", "late-22", "midnight", "dawn-23", "six-23"}),
    ((Match(START_DATE, "single", "20261123"), Match(START_TIME, "range", high="0559")),
     {"midnight", "dawn-23"}),
    ((Match(START_DATE, "single", "20261123"), Match(START_TIME, "single", "0600")),
     {"six-23"}),
])
def test_date_and_time_are_one_range(matches: tuple[Match, ...], expected: set[str]) -> None:
    with Worklist([one_patient(proc("1.1", *NIGHT))]) as wl:
        for order in (matches, matches[::-1]):
            query = q(*order)
            assert sps(wl.found(query)) == expected == sps(reference(wl.rows, query))


def test_time_range_without_date() -> None:
    """wlistqry5: only SPS Start Time 120000- — a time of day on any day."""
    with Worklist([one_patient(proc("1.1", *NIGHT))]) as wl:
        query = q(Match(START_TIME, "range", low="120000"))
        expected = {"noon-23", "late-23", "early-22", "late-22", "late-21"}
        assert sps(wl.found(query)) == expected == sps(reference(wl.rows, query))
        query = q(Match(START_TIME, "range", low="0600", high="1200"))
        expected = {"six-23", "after-23", "noon-23"}
        assert sps(wl.found(query)) == expected == sps(reference(wl.rows, query))


def test_time_range_without_date_through_parse_identifier() -> None:
    ds = Dataset()
    step = Dataset()
    step.ScheduledProcedureStepStartDate = ""
    step.ScheduledProcedureStepStartTime = "120000-"
    ds.ScheduledProcedureStepSequence = [step]
    parsed = parse_identifier(ds)
    assert parsed.query.matches == [Match(START_TIME, "range", low="120000")]
    with Worklist([one_patient(proc("1.1", *NIGHT))]) as wl:
        assert sps(wl.found(parsed.query)) == {"noon-23", "late-23", "early-22", "late-22",
                                                "late-21"}


@pytest.mark.parametrize("time_match", [
    Match(START_TIME, "range", high="0859"), Match(START_TIME, "single", "0859"),
])
@pytest.mark.parametrize("with_date", [True, False])
def test_stored_time_with_colons(time_match: Match, with_date: bool) -> None:
    steps_ = [StepItem("colon", date="20261122", time="08:59:00"),
              StepItem("plain", date="20261122", time="085900")]
    with Worklist([one_patient(proc("1.1", *steps_))]) as wl:
        matches = [time_match, *([Match(START_DATE, "single", "20261122")] if with_date else [])]
        assert sps(wl.found(q(*matches))) == {"colon", "plain"}


PEOPLE = [
    PatientItem("P1", [proc("1.1", StepItem("S1"), referring="Yamada^Tarou=山田^太郎")],
                name="DOE^JOHN"),
    PatientItem("P2", [proc("1.2", StepItem("S2"))], name="Doe^Jane^Q"),
    PatientItem("P3", [proc("1.3", StepItem("S3"))], name="DOEBLER^JOHN"),
    PatientItem("P4", [proc("1.4", StepItem("S4"))],
                name="Yamada^Tarou=山田^太郎=やまだ^たろう"),
    PatientItem("P5", [proc("1.5", StepItem("S5"))], name="MÜLLER^Jörg"),
]


@pytest.mark.parametrize(("value", "expected"), [
    ("doe^j*", {"S1", "S2"}),
    ("DOE^JOHN", {"S1"}),
    ("doe^john", {"S1"}),
    ("doe", {"S1", "S2"}),
    ("doe*", {"S1", "S2", "S3"}),
    ("*^john", {"S1", "S3"}),
    ("^JOHN", {"S1", "S3"}),
    ("doe^jane^q", {"S2"}),
    ("doe^jane^r", set()),
    ("d?e^*", {"S1", "S2"}),
    ("müller^JÖRG", {"S5"}),
    ("yamada", {"S4"}),
    ("=山田^太郎", {"S4"}),
    ("=山田^*", {"S4"}),
    ("YAMADA=山田", {"S4"}),
    ("doe=山田", set()),
    ("==やまだ", {"S4"}),
])
def test_pn_case_and_components(value: str, expected: set[str]) -> None:
    with Worklist(PEOPLE) as wl:
        kind = "wildcard" if "*" in value or "?" in value else "single"
        query = q(Match("PatientName", kind, value))
        assert sps(wl.found(query)) == expected == sps(reference(wl.rows, query))


def test_pn_ideographic_group_on_other_pn_keys() -> None:
    with Worklist(PEOPLE) as wl:
        query = q(Match("ReferringPhysicianName", "single", "山田^太郎"))
        assert sps(wl.found(query)) == {"S1"}


@pytest.mark.parametrize("value", ["山田^太郎", "山田", "山*", "やまだ^たろう", "?田^太*"])
def test_pn_matches_ideographic_group(value: str) -> None:
    """A single-group query matches any component group (the PatientName index must not
    narrow the search to the alphabetic family name)."""
    with Worklist(PEOPLE) as wl:
        kind = "wildcard" if "*" in value else "single"
        query = q(Match("PatientName", kind, value))
        assert sps(reference(wl.rows, query)) == {"S4"}
        assert sps(wl.found(query)) == {"S4"}


def test_station_ae_with_two_titles() -> None:
    patients = [one_patient(
        proc("1.1", StepItem("both", date="20261122", time="0800", stations=["CT1", "CT2"]),
             StepItem("mr", date="20261122", time="0900", stations=["MR1"]),
             StepItem("none", date="20261122", time="1000")))]
    with Worklist(patients) as wl:
        for match, expected in [
            (Match(STATION, "single", "CT2"), ["both"]),
            (Match(STATION, "single", "CT1"), ["both"]),
            (Match(STATION, "wildcard", "CT?"), ["both"]),
            (Match(STATION, "wildcard", "*1"), ["both", "mr"]),
            (Match(STATION, "single", "ct2"), []),
            (Match(STATION, "single", "XX"), []),
        ]:
            found = wl.found(q(match))
            assert [s for _, s in found] == expected
            assert sps(found) == sps(reference(wl.rows, q(match)))
            dated = q(match, Match(START_DATE, "single", "20261122"),
                      Match(START_TIME, "range", low="0800", high="0800"))
            assert [s for _, s in wl.found(dated)] == [s for s in expected if s == "both"]


def test_station_all_star_wildcard_matches_step_without_station() -> None:
    """PS3.4 C.2.2.2.4: '*' matches any sequence of characters, a zero-length one too."""
    patients = [one_patient(proc("1.1", StepItem("none"), StepItem("ct", stations=["CT1"])))]
    with Worklist(patients) as wl:
        parsed = parse_identifier(_sps_identifier(ScheduledStationAETitle="**"))
        assert parsed.query.matches == [Match(STATION, "wildcard", "**")]
        assert sps(wl.found(parsed.query)) == {"none", "ct"}


def _sps_identifier(**values: str) -> Dataset:
    ds = Dataset()
    step = Dataset()
    for keyword, value in values.items():
        setattr(step, keyword, value)
    ds.ScheduledProcedureStepSequence = [step]
    return ds


@pytest.mark.parametrize(("include_hidden", "status", "expected"), [
    (False, None, {"SCHEDULED", "ARRIVED", "READY", "DEPARTED"}),
    (True, None, set(STATUSES)),
    (True, "COMPLETED", {"COMPLETED"}),
    (True, "SCHEDULED", {"SCHEDULED"}),
])
def test_hidden_statuses(include_hidden: bool, status: str | None, expected: set[str]) -> None:
    patients = [one_patient(proc("1.1", *[StepItem(s.value, status=s) for s in StepStatus]))]
    with Worklist(patients) as wl:
        matches = [Match("ScheduledProcedureStepStatus", "single", status)] if status else []
        query = WorklistQuery(matches, include_hidden)
        assert sps(wl.found(query)) == expected == sps(reference(wl.rows, query))


def test_uid_list() -> None:
    patients = [one_patient(*[proc(f"1.{i}", StepItem(f"S{i}")) for i in range(1, 5)])]
    with Worklist(patients) as wl:
        query = q(Match("StudyInstanceUID", "list", values=("1.2", "1.4", "1.9")))
        assert sps(wl.found(query)) == {"S2", "S4"}
