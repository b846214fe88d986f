"""Worklist queries as SQL: every matching key becomes a bound condition on indexed columns.

User input never reaches the SQL text: values are bound, wildcards become the dialect's
patterns (GLOB on SQLite, LIKE in the C collation on PostgreSQL, their own metacharacters
escaped) and person names go to the ``pn_match`` function (SQLite) or are matched in Python
on the rows the indexed conditions found (PostgreSQL).

Neither backtracks: PN goes through broker.model.worklist's segment matcher; SQLite's GLOB (3.21
and later) gives up a pattern as soon as its last ``*`` has run through the value
(SQLITE_NOWILDCARDMATCH), so each ``*`` scans the rest of the value once — O(len(value) ·
len(pattern)), in C, without the GIL — and patterns are capped (dicom.max_query_*).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from broker.model.orders import Attrs
from broker.model.ups import workitem_uid
from broker.model.worklist import (
    HIDDEN_STATUSES,
    Match,
    WorklistQuery,
    datetime_range,
    literal_prefix,
    pn_matches,
    time_of_day_range,
)
from broker.store.connection import Batches
from broker.store.dialect import Dialect
from broker.store.sqlite.dialect import SQLITE

#: matching keyword → column (the steps s / procedures p / patients pt join)
COLUMNS = {
    "PatientID": "pt.patient_id",
    "IssuerOfPatientID": "pt.issuer",
    "PatientName": "pt.name",
    "PatientBirthDate": "pt.birth_date",
    "PatientSex": "pt.sex",
    "AccessionNumber": "p.accession",
    "RequestedProcedureID": "p.requested_procedure_id",
    "StudyInstanceUID": "p.study_uid",
    "AdmissionID": "p.admission_id",
    "ReferringPhysicianName": "p.referring_physician",
    "RequestingPhysician": "p.requesting_physician",
    "PlacerOrderNumberImagingServiceRequest": "p.placer_order",
    "FillerOrderNumberImagingServiceRequest": "p.filler_order",
    "Modality": "s.modality",
    "ScheduledProcedureStepID": "s.sps_id",
    "ScheduledProcedureStepStatus": "s.status",
    "ScheduledPerformingPhysicianName": "s.performing_physician",
    "ScheduledStationName": "s.station_name",
    "ScheduledProcedureStepLocation": "s.location",
    "SOPInstanceUID": "s.uid",  # a workitem's UID (UPS C-FIND)
}
STATION = "ScheduledStationAETitle"
START_DATE = "ScheduledProcedureStepStartDate"
START_TIME = "ScheduledProcedureStepStartTime"
#: UPS: the start as one DT (range), matched against the same column
START_DATETIME = "ScheduledProcedureStepStartDateTime"
#: the keys the broker can match on (anything else with a value is reported as unsupported)
#: the keys of UPS only (a worklist query with one reports it unsupported, as before)
UPS_ONLY = frozenset({"SOPInstanceUID", START_DATETIME})
MATCHABLE = (frozenset(COLUMNS) | {STATION, START_DATE, START_TIME}) - UPS_ONLY
UPS_MATCHABLE = MATCHABLE | UPS_ONLY
PN_KEYS = frozenset({"PatientName", "ReferringPhysicianName", "RequestingPhysician",
                     "ScheduledPerformingPhysicianName"})


@dataclass(slots=True)
class WorklistRow:
    """One scheduled step with its requested procedure and patient."""

    patient: Attrs
    procedure: Attrs
    step: Attrs
    step_id: int = 0  # the step's row id (the query log keeps which steps a query returned)
    stored_uid: str = ""  # the step's workitem UID, once UPS has named it
    created_at: float = 0.0
    own: Attrs | None = None  # the workitem's own attributes (a UPS query asks for them)
    #: the stored values the row was read from: equal fingerprints, equal rows
    fingerprint: tuple[Any, ...] = ()

    @property
    def uid(self) -> str:
        """The step's workitem SOP Instance UID (the one UPS will store, if not yet)."""
        return self.stored_uid or workitem_uid(self.step_id, self.created_at)


def dt_range(match: Match) -> tuple[str, str]:
    """A DT single value or range as YYYYMMDDHHMMSS bounds of the start column ('' = open);
    fractions and offsets are dropped (start times are stored in local time)."""
    def bound(value: str, upper: bool) -> str:
        digits = value.split(".")[0].split("+")[0].split("-")[0] if value else ""
        if not digits:
            return ""
        fill = "1231235959" if upper else "0101000000"
        return (digits + ("99991231235959" if upper else "00000101000000")[len(digits):]
                if len(digits) < 4 else digits + fill[len(digits) - 4:])[:14]
    if match.kind == "single":
        return bound(match.value, False), bound(match.value, True)
    return bound(match.low, False), bound(match.high, True)


def pn_match(stored: str | None, query: str) -> bool:
    """The ``pn_match`` SQL function (SQLite) and the Python filter (PostgreSQL)."""
    return pn_matches(stored or "", query)


def glob_pattern(pattern: str) -> str:
    """A DICOM wildcard pattern as a GLOB pattern: only * and ? stay special."""
    return SQLITE.wildcard_param(pattern)


@dataclass(slots=True)
class Statement:
    """A worklist query as SQL, and the person-name filters applied to its rows in Python
    (column position of the extra selected value, pattern) where the database cannot."""

    sql: str
    params: list[Any]
    filters: list[tuple[int, str]] = field(default_factory=list)


def build_sql(query: WorklistQuery, dialect: Dialect = SQLITE) -> tuple[str, list[Any]]:
    statement = build(query, dialect)
    return statement.sql, statement.params


def build(query: WorklistQuery, d: Dialect = SQLITE) -> Statement:
    where: list[str] = []
    params: list[Any] = []
    extra: list[str] = []  # selected after the row's own columns (for the Python filters)
    filters: list[tuple[int, str]] = []
    by_keyword = {m.keyword: m for m in query.matches}
    low, high = datetime_range(by_keyword.get(START_DATE), by_keyword.get(START_TIME))
    if START_DATETIME in by_keyword:
        low, high = dt_range(by_keyword[START_DATETIME])
    station = by_keyword.get(STATION)
    source = "steps s"
    start_column = "s.start_dt"
    if station is not None and station.kind == "single":
        source = "step_stations ss JOIN steps s ON s.id = ss.step_fk"
        start_column = "ss.start_dt"
        where.append("ss.station_aet = ?")
        params.append(station.value)
    elif station is not None and station.value.strip("*"):  # '**' also matches "no station"
        where.append("EXISTS (SELECT 1 FROM step_stations x WHERE x.step_fk = s.id"
                     f" AND {d.wildcard('x.station_aet')})")
        params.append(d.wildcard_param(station.value))
    if low:
        where.append(f"{start_column} >= ?")
        params.append(low)
    if high:
        where.append(f"{start_column} <= ?")
        params.append(high)
    if low or high:
        where.append(f"{start_column} != ''")
    time_only = by_keyword.get(START_TIME) if START_DATE not in by_keyword else None
    if time_only is not None:
        t_low, t_high = time_of_day_range(time_only)
        where.append(f"{start_column} != '' AND substr({start_column}, 9, 6) BETWEEN ? AND ?")
        params += [t_low, t_high]
    for match in query.matches:
        if match.keyword in COLUMNS:
            pn = _condition(match, COLUMNS[match.keyword], where, params, d)
            if pn is not None:
                filters.append((11 + len(extra), pn))
                extra.append(COLUMNS[match.keyword])
    if "SOPInstanceUID" in by_keyword:  # lets the partial unique index on steps.uid serve
        where.append("s.uid != ''")
    if query.step_ids:  # the analyst's explanation: the same query, on these steps only
        where.append(f"s.id IN {d.json_values(integer=True)}")
        params.append(json.dumps(list(query.step_ids)))
    if not query.include_hidden:
        where.append(f"s.status NOT IN ({', '.join('?' * len(HIDDEN_STATUSES))})")
        params += [s.value for s in HIDDEN_STATUSES]
    columns = "".join(f", {c}" for c in extra)
    own = ("(SELECT w.attrs FROM workitems w WHERE w.step_fk = s.id)" if query.workitems
           else "NULL")
    sql = (f"SELECT pt.patient_id, pt.issuer, pt.attrs, p.study_uid, p.attrs, s.status,"
           f" s.attrs, s.id, s.uid, s.created_at, {own}{columns}"
           f" FROM {source} JOIN procedures p ON p.id = s.procedure_fk"
           f" JOIN patients pt ON pt.id = p.patient_fk")
    if where:
        sql += " WHERE " + " AND ".join(where)
    return Statement(sql + f" ORDER BY {start_column}, s.id", params, filters)


def _condition(match: Match, column: str, where: list[str], params: list[Any],
               d: Dialect) -> str | None:
    """Add the SQL of one matching key; a person-name pattern the database cannot match
    itself is returned (to be matched in Python)."""
    if match.keyword in PN_KEYS and match.kind in ("single", "wildcard", "name"):
        if match.keyword == "PatientName" and "=" not in match.value:
            prefix = literal_prefix(match.value.split("^")[0]).strip().casefold()
            if prefix:  # any group's family name starts so: the index narrows the search
                where.append("pt.id IN (SELECT patient_fk FROM patient_names"
                             " WHERE name_key >= ? AND name_key < ?)")
                params += [prefix, prefix + "\U0010ffff"]
        if not d.python_functions:
            return match.value
        where.append(f"pn_match({column}, ?)")
        params.append(match.value)
    elif match.kind == "single":
        where.append(f"{column} = ?")
        params.append(match.value)
    elif match.kind == "wildcard":
        where.append(d.wildcard(column))
        params.append(d.wildcard_param(match.value))
    elif match.kind == "list":  # one bound JSON array, whatever its length: never more
        where.append(f"{column} IN {d.json_values()}")  # SQL variables than keys
        params.append(json.dumps(list(match.values)))
    elif match.kind == "range":
        if match.low:
            where.append(f"{column} >= ?")
            params.append(match.low)
        if match.high:
            where.append(f"{column} <= ?")
            params.append(match.high)
        where.append(f"{column} != ''")
    return None


def rows(cursor: Batches, filters: list[tuple[int, str]]) -> Iterator[WorklistRow]:
    """The worklist rows of a cursor over a :func:`build` statement, read 64 at a time."""
    while batch := cursor.fetchmany(64):
        for row in batch:
            if filters and not all(pn_match(row[i], p) for i, p in filters):
                continue
            stored = tuple(row[:11])
            (patient_id, issuer, patient, uid, procedure, status, step, step_id, step_uid,
             created, own) = stored
            patient_attrs = json.loads(patient)
            patient_attrs["PatientID"] = patient_id
            if issuer:
                patient_attrs["IssuerOfPatientID"] = issuer
            procedure_attrs = json.loads(procedure)
            procedure_attrs["StudyInstanceUID"] = uid
            step_attrs = json.loads(step)
            step_attrs["ScheduledProcedureStepStatus"] = status
            yield WorklistRow(patient_attrs, procedure_attrs, step_attrs, step_id, step_uid,
                              created, json.loads(own) if own else None, stored)
