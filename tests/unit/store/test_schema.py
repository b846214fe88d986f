"""Schema migrations on SQLite: a database of an older version is brought up to date, and
migration 7 turns second accepted originals (left by older retention runs) into duplicates
before the database enforces one accepted original per sender and control ID; migration 14's
Python step indexes the references of the FHIR resources already stored."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from broker.store import fhir_refs
from broker.store.schema import ADDITIVE, MIGRATIONS, STEPS
from broker.store.sqlite.connection import connect, migrate, schema_version
from broker.store.unit_of_work import UnitOfWork


def at_version(path: Path, version: int) -> sqlite3.Connection:
    conn = connect(path, synchronous="OFF")
    for statement in ";".join(MIGRATIONS[:version]).split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


def log(conn: sqlite3.Connection, control_id: str, duplicate_of: int | None = None) -> int:
    return int(conn.execute(
        "INSERT INTO message_log (received_at, sender_application, sender_facility, control_id,"
        " outcome, duplicate_of, raw) VALUES (0, 'RIS', 'HOSP', ?, 'AA', ?, x'00')"
        " RETURNING id", (control_id, duplicate_of)).fetchone()[0])


def test_second_originals_become_duplicates_then_the_database_enforces_one(tmp_path: Path
                                                                           ) -> None:
    conn = at_version(tmp_path / "old.sqlite", 6)
    first, second, other = log(conn, "C1"), log(conn, "C1"), log(conn, "C2")
    resend = log(conn, "C1", first)
    assert migrate(conn) == len(MIGRATIONS) and schema_version(conn) == len(MIGRATIONS)
    rows = dict(conn.execute("SELECT id, duplicate_of FROM message_log").fetchall())
    assert rows == {first: None, second: first, other: None, resend: first}
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        log(conn, "C2")
    log(conn, "C2", other)  # a duplicate is fine
    conn.close()


def test_migration_14_indexes_the_references_of_resources_already_stored(tmp_path: Path
                                                                        ) -> None:
    conn = at_version(tmp_path / "v13.sqlite", 13)  # what the broker before 14 left
    bodies = {
        ("ServiceRequest", "s1"): {"resourceType": "ServiceRequest", "id": "s1",
                                   "subject": {"reference": "Patient/p1"},
                                   "encounter": {"reference": "Encounter/e1"}},
        ("Appointment", "a1"): {"resourceType": "Appointment", "id": "a1", "status": "booked",
                                "basedOn": [{"reference": "ServiceRequest/s1"},
                                            {"reference": "ServiceRequest/s2"}],
                                "participant": [{"actor": {"reference": "Location/r1"}}]},
        ("Patient", "p1"): {"resourceType": "Patient", "id": "p1",
                            "managingOrganization": {"reference": "http://x/Organization/o"}},
    }
    for n in range(3):  # more than one batch of the backfill
        bodies[("Appointment", f"b{n}")] = {"resourceType": "Appointment", "id": f"b{n}",
                                            "basedOn": [{"reference": "ServiceRequest/s2"}]}
    for (resource_type, logical_id), body in bodies.items():
        conn.execute("INSERT INTO fhir_resources (resource_type, id, body, updated_at)"
                     " VALUES (?, ?, ?, 0)", (resource_type, logical_id, json.dumps(body)))
    conn.execute("INSERT INTO fhir_resources (resource_type, id, body, updated_at)"
                 " VALUES ('Appointment', 'broken', 'not json', 0)")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fhir_refs, "BATCH", 2)
        assert 14 in STEPS and 14 not in ADDITIVE, "a schema-13 broker would skip the rows"
        assert migrate(conn) == len(MIGRATIONS) == schema_version(conn)
    assert set(conn.execute("SELECT resource_type, id, element, reference"
                            " FROM fhir_references")) == {
        ("ServiceRequest", "s1", "subject", "Patient/p1"),
        ("ServiceRequest", "s1", "encounter", "Encounter/e1"),
        ("Appointment", "a1", "basedOn", "ServiceRequest/s1"),
        ("Appointment", "a1", "basedOn", "ServiceRequest/s2"),
        ("Appointment", "a1", "participant.actor", "Location/r1"),
        ("Appointment", "b0", "basedOn", "ServiceRequest/s2"),
        ("Appointment", "b1", "basedOn", "ServiceRequest/s2"),
        ("Appointment", "b2", "basedOn", "ServiceRequest/s2")}
    repo = UnitOfWork(conn).fhir
    assert [r.id for r in repo.by_reference("Appointment", "basedOn", "ServiceRequest/s2")
            ] == ["a1", "b0", "b1", "b2"]
    assert [r.id for r in repo.by_reference("ServiceRequest", "subject", "Patient/p1")
            ] == ["s1"]
    conn.close()


def test_each_python_step_belongs_to_a_migration() -> None:
    assert set(STEPS) <= set(range(1, len(MIGRATIONS) + 1))
    assert "CREATE TABLE fhir_references" in MIGRATIONS[14 - 1]
