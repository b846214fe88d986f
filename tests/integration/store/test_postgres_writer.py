"""The PostgreSQL writer on a real server: batches run in pipeline mode (an error that
surfaces at a later statement still fails only its own job; row counts are read after a
sync), and several write connections share one queue."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest

from broker.model.orders import PatientKey
from broker.store.errors import Conflict
from broker.store.messages import MessageRecord
from broker.store.postgres.connection import PgConnection
from broker.store.postgres.writer import PostgresWriter
from broker.store.unit_of_work import UnitOfWork
from tests.integration.store.test_postgres_store import add_order


def record(control_id: str, n: int) -> MessageRecord:
    return MessageRecord(time.time(), "127.0.0.1:1", "RIS", "HOSP", control_id, "ORM^O01",
                         "", "AA", "", f"MSA|AA|{control_id}", b"MSH|...", f"P{n}", f"A{n}",
                         content_hash=f"hash{n}")


def test_a_late_error_in_the_pipeline_fails_only_its_own_job(postgres_url: str) -> None:
    """Eight jobs in one batch; the fourth logs a second accepted original of a control ID
    (the unique index objects at the next sync, in another job's statement): that job gets
    the Conflict, the seven others are committed."""
    writer = PostgresWriter(postgres_url)
    writer.start()
    try:
        writer.run_sync(lambda uow: uow.messages.log_message(record("DUP", 0)))

        def job(n: int) -> object:
            def work(uow: UnitOfWork) -> int:
                uow.messages.log_message(record("DUP" if n == 3 else f"C{n}", n))
                return add_order(uow, 100 + n)
            return work

        async def batch() -> list[object]:
            return await asyncio.gather(*(writer.run(job(n)) for n in range(8)),
                                        return_exceptions=True)

        results = asyncio.run(batch())
        assert isinstance(results[3], Conflict), results
        assert all(isinstance(r, int) for k, r in enumerate(results) if k != 3), results
        assert writer.retries == 0
    finally:
        writer.stop()
    with psycopg.connect(postgres_url) as conn:
        logged = sorted(r[0] for r in conn.execute("SELECT control_id FROM message_log"))
        patients = conn.execute("SELECT count(*) FROM patients").fetchone()
    assert logged == sorted(["DUP", *(f"C{n}" for n in range(8) if n != 3)])
    assert patients == (7,)


def test_row_counts_are_read_after_a_sync(postgres_url: str) -> None:
    writer = PostgresWriter(postgres_url)
    writer.start()
    try:
        def merge(uow: UnitOfWork) -> int:
            for n in range(3):
                add_order(uow, 200 + n)
            prior = uow.orders.patient(PatientKey("P200", ""))
            survivor = uow.orders.patient(PatientKey("P201", ""))
            assert prior is not None and survivor is not None
            uow.orders.move_procedures(survivor.id, prior.id)
            return uow.orders.move_procedures(prior.id, survivor.id)

        assert writer.run_sync(merge) == 2
    finally:
        writer.stop()


@pytest.mark.parametrize("connections", [3])
def test_several_write_connections_share_the_queue(postgres_url: str, connections: int
                                                   ) -> None:
    writer = PostgresWriter(postgres_url, connections=connections)
    writer.start()
    names = {t.name for t in threading.enumerate() if t.name.startswith("store-writer")}
    assert len(names) == connections
    used: set[str] = set()
    failures: list[BaseException] = []

    def client(k: int) -> None:
        for n in range(40):
            def work(uow: UnitOfWork, number: int = k * 1000 + n) -> int:
                used.add(threading.current_thread().name)
                return add_order(uow, number)
            try:
                writer.run_sync(work, timeout=30)
            except BaseException as exc:
                failures.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(12)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not failures
        assert writer.jobs == 480
        assert len(used) > 1  # the batches went to more than one connection
    finally:
        writer.stop()
    assert not writer.alive
    assert {t.name for t in threading.enumerate() if t.name.startswith("store-writer")} == set()


def test_the_database_clock_is_read_once_per_batch_and_only_when_asked(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch whose jobs bring their own clock (HL7 jobs: the message's reception time)
    sends no clock query; jobs that ask for the time share one reading of the database's
    clock per batch."""
    clock_reads: list[str] = []
    execute = PgConnection.execute

    def counting(conn: PgConnection, sql: str, parameters: Any = ()) -> Any:
        if "clock_timestamp()" in sql:
            clock_reads.append(threading.current_thread().name)
        return execute(conn, sql, parameters)

    monkeypatch.setattr(PgConnection, "execute", counting)
    writer = PostgresWriter(postgres_url)
    writer.start()
    try:
        def own_clock(n: int) -> Any:
            def work(uow: UnitOfWork) -> float:
                uow = uow.at(1_700_000_000.0 + n)
                uow.messages.log_message(record(f"OWN{n}", n))
                return uow.now
            return work

        def database_clock(uow: UnitOfWork) -> float:
            return uow.now

        async def batch(jobs: list[Any]) -> list[Any]:
            return await asyncio.gather(*(writer.run(job) for job in jobs))

        writer.run_sync(lambda uow: None)  # the connection, its migrations
        clock_reads.clear()
        assert asyncio.run(batch([own_clock(n) for n in range(6)])) == [
            1_700_000_000.0 + n for n in range(6)]
        assert clock_reads == []
        commits = writer.commits
        times = asyncio.run(batch([database_clock for _ in range(6)]))
        assert 1 <= len(clock_reads) <= writer.commits - commits  # one per batch at most
        assert len(set(times)) == len(clock_reads)
        assert abs(times[0] - time.time()) < 60
    finally:
        writer.stop()
