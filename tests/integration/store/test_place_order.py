"""A new order on both backends: PostgreSQL places it in one chained statement
(broker.store.placing), SQLite in the statements one by one; the rows they leave must be
the same, for a new patient, a known one whose name changed, a merged-away one, a Study
Instance UID already on file and steps with several stations."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from broker.config import DatabaseSettings, Settings
from broker.hl7.message import parse
from broker.mapping.engine import map_message
from broker.mapping.holder import MappingHolder
from broker.model.orders import Event, OrderChange, Patient, PatientKey, PatientMerge
from broker.store.factory import open_store
from broker.store.messages import MessageRecord
from broker.store.postgres.writer import PostgresWriter
from broker.workflow.orders import apply, apply_new_order, is_new_order
from tests.support.samples import order

DUMPS = {
    "patients": "SELECT p.patient_id, p.issuer, p.name, p.birth_date, p.sex, p.attrs,"
                " m.patient_id FROM patients p LEFT JOIN patients m ON m.id = p.merged_into"
                " ORDER BY p.patient_id, p.issuer",
    "names": "SELECT n.name_key, p.patient_id FROM patient_names n"
             " JOIN patients p ON p.id = n.patient_fk ORDER BY 1, 2",
    "procedures": "SELECT r.study_uid, p.patient_id, r.accession, r.placer_order,"
                  " r.requested_procedure_id, r.referring_physician, r.priority, r.attrs,"
                  " r.order_control FROM procedures r JOIN patients p ON p.id = r.patient_fk"
                  " ORDER BY r.study_uid",
    "steps": "SELECT r.study_uid, s.sps_id, s.status, s.modality, s.start_date, s.start_time,"
             " s.start_dt, s.performing_physician, s.station_name, s.location, s.attrs"
             " FROM steps s JOIN procedures r ON r.id = s.procedure_fk"
             " ORDER BY r.study_uid, s.sps_id",
    "stations": "SELECT t.station_aet, t.start_dt, r.study_uid, s.sps_id FROM step_stations t"
                " JOIN steps s ON s.id = t.step_fk JOIN procedures r ON r.id = s.procedure_fk"
                " ORDER BY 3, 4, 1",
}
JSON_COLUMNS = {"patients": 5, "procedures": 7, "steps": 10}


def events() -> list[Event]:
    """The order of things a RIS sends that reach place_order's every branch."""
    mappings = MappingHolder(Settings().mappings.directory)

    def mapped(n: int, stations: tuple[str, ...] = (), **fields: Any) -> list[Event]:
        """The events of the n-th sample order; ``stations``: the step's AE titles (the
        default mappings take them from station rules)."""
        evs = map_message(parse(order(n, **fields).text()), mappings(), [])
        for ev in evs:
            if stations and isinstance(ev, OrderChange):
                for step in ev.procedure.steps:
                    step.attrs["ScheduledStationAETitle"] = list(stations)
        return evs

    known = PatientKey("P0000001", "HOSP")
    return [
        # a new patient, two steps with their stations
        *mapped(n=1, stations=("CT1", "CT2"), sps_ids=["S1A", "S1B"]),
        # a known patient with a new name: updated, its name index rewritten
        *mapped(n=2, patient_id=known.patient_id, patient_name="NEWNAME^JANE"),
        # a patient merged into the known one; an order for it lands on the survivor
        *mapped(n=3, stations=("MR1",)),
        PatientMerge(Patient(known, {}), PatientKey("P0000003", "HOSP")),
        *mapped(n=4, patient_id="P0000003", patient_name="NEWNAME^JANE"),
        # a new patient whose order names a Study Instance UID on file: the order is updated
        *mapped(n=5, study_uid="1.2.826.0.1.3680043.8.498.2", stations=("US1",)),
        # a new patient with no station
        *mapped(n=6),
    ]


def dump(rows: Callable[[str], list[Any]]) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    for table, sql in DUMPS.items():
        fixed = []
        for row in rows(sql):
            values = list(row)
            if table in JSON_COLUMNS:
                values[JSON_COLUMNS[table]] = json.loads(values[JSON_COLUMNS[table]])
            fixed.append(tuple(values))
        out[table] = fixed
    return out


def run(writer: Any, evs: list[Event]) -> None:
    writer.start()
    try:
        for ev in evs:
            writer.run_sync(lambda uow, ev=ev: apply(uow.orders, ev))
    finally:
        writer.stop()


def test_both_backends_place_orders_alike(tmp_path: Path, postgres_url: str) -> None:
    evs = events()
    run(open_store(DatabaseSettings(path=str(tmp_path / "broker.sqlite"), url="")).writer, evs)
    run(PostgresWriter(postgres_url), evs)
    with sqlite3.connect(tmp_path / "broker.sqlite") as lite:
        on_sqlite = dump(lambda sql: lite.execute(sql).fetchall())
    with psycopg.connect(postgres_url) as pg:
        on_postgres = dump(lambda sql: pg.execute(sql).fetchall())
    for table in DUMPS:
        assert on_postgres[table] == on_sqlite[table], table

    patients = {row[0]: row for row in on_postgres["patients"]}
    assert patients["P0000001"][2] == "NEWNAME^JANE"
    assert patients["P0000003"][6] == "P0000001"  # merged into the known patient
    names = on_postgres["names"]
    assert ("newname", "P0000001") in names and ("patient", "P0000001") not in names
    owners = {row[0]: row[1] for row in on_postgres["procedures"]}
    assert owners["1.2.826.0.1.3680043.8.498.5"] == "P0000001"  # order 4, merged patient
    assert owners["1.2.826.0.1.3680043.8.498.2"] == "P0000005"  # order 5 took over order 1's
    assert len(owners) == 5
    stations = on_postgres["stations"]
    assert [(r[0], r[3]) for r in stations if r[2] == "1.2.826.0.1.3680043.8.498.2"] == [
        ("CT1", "S1A"), ("CT2", "S1A"), ("CT1", "S1B"), ("CT2", "S1B"), ("US1", "SPS0000005")]
    assert not [r for r in stations if r[2] == "1.2.826.0.1.3680043.8.498.7"]


def test_a_guarded_order_of_an_accepted_message_writes_nothing(tmp_path: Path,
                                                               postgres_url: str) -> None:
    """With its sender's control ID on file as accepted, the order is not placed and the
    accepted message comes back (PostgreSQL: read in the same statement as the order)."""
    ev = events()[0]
    assert isinstance(ev, OrderChange) and is_new_order([ev])
    accepted = MessageRecord(1_700_000_000.0, "127.0.0.1:1", "RIS", "HOSP", "MSG00000001",
                             "ORM^O01", "", "AA", "", "MSH|ACK", b"MSH|...",
                             content_hash="h1")
    for writer in (open_store(DatabaseSettings(path=str(tmp_path / "b.sqlite"), url="")).writer,
                   PostgresWriter(postgres_url)):
        writer.start()
        try:
            first = writer.run_sync(
                lambda uow: apply_new_order(uow.orders, ev, ("RIS", "HOSP", "MSG00000009")))
            assert first is None  # another control ID: placed
            writer.run_sync(lambda uow: uow.messages.log_message(accepted))
            again = writer.run_sync(
                lambda uow: apply_new_order(uow.orders, ev, ("RIS", "HOSP", "MSG00000001")))
            assert again is not None and again[1:] == ("MSH|ACK", "h1", 1_700_000_000.0)
            counts = writer.run_sync(lambda uow: [
                uow.orders.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("patients", "procedures", "steps")])
            assert counts == [1, 1, 2]  # the first placement only
        finally:
            writer.stop()
