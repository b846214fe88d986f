"""The PostgreSQL store on a real server: migrations once across brokers, the schema
compatibility window, the writer across a server restart, advisory locks between writers,
migration 14's Python step (FHIR references of stored resources)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psycopg
import pytest

from broker.config import DatabaseSettings
from broker.model.orders import PatientKey, StepStatus
from broker.model.worklist import WorklistQuery
from broker.store.errors import StoreError, StoreUnavailable
from broker.store.factory import open_store
from broker.store.fhir import FhirRow
from broker.store.postgres.connection import connect
from broker.store.postgres.schema import SchemaTooNew, migrate, schema_state, translate
from broker.store.postgres.writer import PostgresWriter
from broker.store.schema import MIGRATIONS
from broker.store.unit_of_work import UnitOfWork
from tests.support.postgres import PostgresCluster


def add_order(uow: UnitOfWork, n: int, name: str = "DOE^JOHN") -> int:
    pk = uow.orders.insert_patient(PatientKey(f"P{n}", ""), {"PatientName": name})
    assert pk is not None
    proc = uow.orders.insert_procedure(pk, {"StudyInstanceUID": f"1.2.{n}",
                                            "AccessionNumber": f"A{n}"}, "NW")
    assert proc is not None
    uow.orders.insert_steps(proc, [{"ScheduledProcedureStepID": f"S{n}", "Modality": "CT",
                                    "ScheduledStationAETitle": ["CT1"],
                                    "ScheduledProcedureStepStartDate": "20261202",
                                    "ScheduledProcedureStepStartTime": "0930"}],
                            StepStatus.SCHEDULED)
    return proc


def test_brokers_started_together_migrate_once(postgres_url: str) -> None:
    errors: list[BaseException] = []
    versions: list[int] = []

    def start() -> None:
        try:
            conn = connect(postgres_url)
            try:
                versions.append(migrate(conn, node=threading.current_thread().name))
            finally:
                conn.raw.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, name=f"n{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert versions == [len(MIGRATIONS)] * 4
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM schema_info").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'patients'"
                            ).fetchone() == (1,)


def test_a_broker_older_than_the_schema_refuses_to_start(postgres_url: str) -> None:
    conn = connect(postgres_url)
    migrate(conn)
    ours = len(MIGRATIONS)
    conn.execute("UPDATE schema_info SET version = ?, compatible_from = ?", (ours + 1, ours))
    conn.raw.commit()
    assert schema_state(conn) == (ours + 1, ours)
    assert migrate(conn) == ours + 1  # within the window: runs, changes nothing
    conn.execute("UPDATE schema_info SET compatible_from = ?", (ours + 1,))
    conn.raw.commit()
    conn.raw.close()
    writer = PostgresWriter(postgres_url)
    with pytest.raises(SchemaTooNew, match=f"version {ours + 1}, newer than this broker's"
                                           f" {ours}.*upgrade this broker"):
        writer.start()
    writer.stop()


def test_store_round_trip_and_person_name_matching_in_python(postgres_url: str) -> None:
    store = open_store(DatabaseSettings(url=postgres_url), "n1")
    store.writer.start()
    try:
        store.writer.run_sync(lambda uow: add_order(uow, 1, "DOE^JOHN"))
        store.writer.run_sync(lambda uow: add_order(uow, 2, "ROE^JANE"))
        from broker.model.worklist import Match
        reader = store.worklist_reader()
        found = list(reader.search(WorklistQuery([Match("PatientName", "wildcard", "D*")])))
        assert [r.patient["PatientID"] for r in found] == ["P1"]
        assert len(list(reader.search(WorklistQuery()))) == 2
        assert store.outbox_entries() == []
    finally:
        store.writer.stop()
        store.close()


def test_the_writer_answers_errors_while_postgresql_is_down_and_resumes(tmp_path: Path
                                                                         ) -> None:
    with PostgresCluster() as pg:
        url = pg.create_database("resume")
        writer = PostgresWriter(url, connect_timeout=1.0)
        writer.start()
        try:
            writer.run_sync(lambda uow: add_order(uow, 1))
            pg.stop("immediate")
            with pytest.raises(StoreError):
                writer.run_sync(lambda uow: add_order(uow, 2), timeout=30)
            with pytest.raises(StoreUnavailable):  # no server: the reconnect fails
                writer.run_sync(lambda uow: add_order(uow, 2), timeout=30)
            pg.start()
            writer.run_sync(lambda uow: add_order(uow, 2), timeout=30)
            assert writer.reconnects >= 1
        finally:
            writer.stop()
        rows = pg.psql("SELECT patient_id FROM patients ORDER BY id", "resume")
        assert rows == [("P1",), ("P2",)]


def test_advisory_locks_serialise_two_writers_on_one_key(postgres_url: str) -> None:
    first, second = PostgresWriter(postgres_url), PostgresWriter(postgres_url)
    first.start()
    second.start()
    entered = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def hold(uow: UnitOfWork) -> None:
        uow.lock("patient:P1")
        order.append("first in")
        entered.set()
        release.wait(10)
        order.append("first out")

    def wait_for_it(uow: UnitOfWork) -> None:
        uow.lock("patient:P1", "order:X")
        # the writer's pipeline sends the lock without waiting: what follows it in the
        # database (here a read) runs once it is granted
        uow.orders.patient(PatientKey("P1", ""))
        order.append("second in")

    try:
        holder = threading.Thread(target=first.run_sync, args=(hold,))
        holder.start()
        assert entered.wait(10)
        waiter = threading.Thread(target=second.run_sync, args=(wait_for_it,))
        waiter.start()
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and len(order) < 2:
            time.sleep(0.01)
        assert order == ["first in"]  # the second waits for the first's transaction
        release.set()
        holder.join(10)
        waiter.join(10)
        assert order == ["first in", "first out", "second in"]
    finally:
        release.set()
        first.stop()
        second.stop()


def test_migration_14_indexes_stored_fhir_references_and_the_writer_keeps_them(
        postgres_url: str) -> None:
    conn = connect(postgres_url)  # a database the broker of schema 13 left
    conn.execute("CREATE TABLE schema_info (version INTEGER NOT NULL, compatible_from INTEGER"
                 " NOT NULL, migrated_at DOUBLE PRECISION NOT NULL, migrated_by TEXT NOT NULL"
                 " DEFAULT '')")
    for migration in MIGRATIONS[:13]:
        for statement in translate(migration):
            conn.execute(statement)
    conn.execute("INSERT INTO schema_info VALUES (13, 1, 0, 'old')")
    stored = [("ServiceRequest", "s1", {"subject": {"reference": "Patient/p1"}}),
              ("Appointment", "a1", {"basedOn": [{"reference": "ServiceRequest/s1"}],
                                     "participant": [{"actor": {"reference": "Location/r"}}]}),
              ("Appointment", "a2", {"basedOn": [{"reference": "ServiceRequest/s1"},
                                                 {"reference": "ServiceRequest/s2"}]})]
    for resource_type, logical_id, body in stored:
        conn.execute("INSERT INTO fhir_resources (resource_type, id, body, updated_at)"
                     " VALUES (?, ?, ?, 0)", (resource_type, logical_id, json.dumps(
                         {"resourceType": resource_type, "id": logical_id, **body})))
    conn.raw.commit()
    assert migrate(conn) == len(MIGRATIONS)
    assert sorted(conn.execute("SELECT resource_type, id, element, reference"
                               " FROM fhir_references").fetchall()) == [
        ("Appointment", "a1", "basedOn", "ServiceRequest/s1"),
        ("Appointment", "a1", "participant.actor", "Location/r"),
        ("Appointment", "a2", "basedOn", "ServiceRequest/s1"),
        ("Appointment", "a2", "basedOn", "ServiceRequest/s2"),
        ("ServiceRequest", "s1", "subject", "Patient/p1")]
    conn.raw.close()
    writer = PostgresWriter(postgres_url)
    writer.start()
    try:
        def rewrite(uow: UnitOfWork) -> list[str]:
            body = {"resourceType": "Appointment", "id": "a1",
                    "basedOn": [{"reference": "ServiceRequest/s2"}]}
            uow.fhir.put(FhirRow("Appointment", "a1", 2, "", "", "", "", "", "", "d",
                                 json.dumps(body), 0))
            return [r.id for r in uow.fhir.by_reference("Appointment", "basedOn",
                                                         "ServiceRequest/s2")]
        assert writer.run_sync(rewrite) == ["a1", "a2"]
        assert writer.run_sync(lambda uow: [r.id for r in uow.fhir.by_reference(
            "Appointment", "basedOn", "ServiceRequest/s1")]) == ["a2"]
    finally:
        writer.stop()
