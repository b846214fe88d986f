"""Worklist queries as SQL: every matching key becomes a bound condition on indexed columns.

User input never reaches the SQL text: values are bound, wildcards become GLOB patterns
(with GLOB's own metacharacters escaped) or go to the ``pn_match`` function.

Neither backtracks: PN goes through broker.model.worklist's segment matcher; SQLite's GLOB (3.21
and later) gives up a pattern as soon as its last ``*`` has run through the value
(SQLITE_NOWILDCARDMATCH), so each ``*`` scans the rest of the value once — O(len(value) ·
len(pattern)), in C, without the GIL — and patterns are capped (dicom.max_query_*).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.model.orders import Attrs
from broker.model.worklist import (
    HIDDEN_STATUSES,
    Match,
    WorklistQuery,
    datetime_range,
    literal_prefix,
    pn_matches,
    time_of_day_range,
)
from broker.store.db import connect, read_errors

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
}
STATION = "ScheduledStationAETitle"
START_DATE = "ScheduledProcedureStepStartDate"
START_TIME = "ScheduledProcedureStepStartTime"
#: the keys the broker can match on (anything else with a value is reported as unsupported)
MATCHABLE = frozenset(COLUMNS) | {STATION, START_DATE, START_TIME}
PN_KEYS = frozenset({"PatientName", "ReferringPhysicianName", "RequestingPhysician",
                     "ScheduledPerformingPhysicianName"})


@dataclass(slots=True)
class WorklistRow:
    """One scheduled step with its requested procedure and patient."""

    patient: Attrs
    procedure: Attrs
    step: Attrs


def open_reader(path: str | Path, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A read-only connection with the functions worklist SQL uses."""
    conn = connect(path, readonly=True, busy_timeout_ms=busy_timeout_ms)
    conn.execute("PRAGMA query_only = ON")
    conn.create_function("pn_match", 2, _pn_match, deterministic=True)
    return conn


def _pn_match(stored: str | None, query: str) -> bool:
    return pn_matches(stored or "", query)


def glob_pattern(pattern: str) -> str:
    """A DICOM wildcard pattern as a GLOB pattern: only * and ? stay special."""
    return pattern.replace("[", "[[]")


def build_sql(query: WorklistQuery) -> tuple[str, list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    by_keyword = {m.keyword: m for m in query.matches}
    low, high = datetime_range(by_keyword.get(START_DATE), by_keyword.get(START_TIME))
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
                     " AND x.station_aet GLOB ?)")
        params.append(glob_pattern(station.value))
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
            _condition(match, COLUMNS[match.keyword], where, params)
    if not query.include_hidden:
        where.append(f"s.status NOT IN ({', '.join('?' * len(HIDDEN_STATUSES))})")
        params += [s.value for s in HIDDEN_STATUSES]
    sql = (f"SELECT pt.patient_id, pt.issuer, pt.attrs, p.study_uid, p.attrs, s.status,"
           f" s.attrs FROM {source} JOIN procedures p ON p.id = s.procedure_fk"
           f" JOIN patients pt ON pt.id = p.patient_fk")
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + f" ORDER BY {start_column}, s.id", params


def _condition(match: Match, column: str, where: list[str], params: list[Any]) -> None:
    if match.keyword in PN_KEYS and match.kind in ("single", "wildcard", "name"):
        if match.keyword == "PatientName" and "=" not in match.value:
            prefix = literal_prefix(match.value.split("^")[0]).strip().casefold()
            if prefix:  # any group's family name starts so: the index narrows the search
                where.append("pt.id IN (SELECT patient_fk FROM patient_names"
                             " WHERE name_key >= ? AND name_key < ?)")
                params += [prefix, prefix + "\U0010ffff"]
        where.append(f"pn_match({column}, ?)")
        params.append(match.value)
    elif match.kind == "single":
        where.append(f"{column} = ?")
        params.append(match.value)
    elif match.kind == "wildcard":
        where.append(f"{column} GLOB ?")
        params.append(glob_pattern(match.value))
    elif match.kind == "list":  # one bound JSON array, whatever its length: never more
        where.append(f"{column} IN (SELECT value FROM json_each(?))")  # SQL variables than keys
        params.append(json.dumps(list(match.values)))
    elif match.kind == "range":
        if match.low:
            where.append(f"{column} >= ?")
            params.append(match.low)
        if match.high:
            where.append(f"{column} <= ?")
            params.append(match.high)
        where.append(f"{column} != ''")


def search(conn: sqlite3.Connection, query: WorklistQuery) -> Iterator[WorklistRow]:
    """Matching steps, earliest start first, read lazily (a C-CANCEL stops the reading)."""
    sql, params = build_sql(query)
    cursor = conn.execute(sql, params)
    try:
        yield from _rows(cursor)
    finally:
        cursor.close()  # also when the caller stops early (C-CANCEL): release the snapshot


def _rows(cursor: sqlite3.Cursor) -> Iterator[WorklistRow]:
    while rows := cursor.fetchmany(64):
        for patient_id, issuer, patient, uid, procedure, status, step in rows:
            patient_attrs = json.loads(patient)
            patient_attrs["PatientID"] = patient_id
            if issuer:
                patient_attrs["IssuerOfPatientID"] = issuer
            procedure_attrs = json.loads(procedure)
            procedure_attrs["StudyInstanceUID"] = uid
            step_attrs = json.loads(step)
            step_attrs["ScheduledProcedureStepStatus"] = status
            yield WorklistRow(patient_attrs, procedure_attrs, step_attrs)


class WorklistReader:
    """A read-only connection for worklist queries, used by one thread; errors are the
    store's own (StoreUnavailable)."""

    def __init__(self, path: str | Path, busy_timeout_ms: int = 5000) -> None:
        with read_errors():
            self._conn = open_reader(path, busy_timeout_ms)

    def search(self, query: WorklistQuery) -> Iterator[WorklistRow]:
        """Matching steps, earliest start first, read lazily."""
        with read_errors():
            yield from search(self._conn, query)

    def close(self) -> None:
        self._conn.close()


def explain(conn: sqlite3.Connection, query: WorklistQuery) -> list[str]:
    """SQLite's query plan, for tests that check the indexes are used."""
    sql, params = build_sql(query)
    return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
