"""The single writer: group commit, failure isolation, callers from other threads."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from broker.store.errors import Conflict, StoreError
from broker.store.sqlite.writer import SqliteWriter as Writer
from broker.store.unit_of_work import UnitOfWork


@pytest.fixture
def writer(tmp_path: Path) -> Writer:
    w = Writer(tmp_path / "w.sqlite", max_batch=64)
    w.start()
    w.run_sync(lambda u: u._conn.execute("CREATE TABLE t (v INTEGER UNIQUE)"))
    yield w
    w.stop()


def values(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT v FROM t ORDER BY v")]
    finally:
        conn.close()


async def test_a_failing_job_does_not_take_its_batch_down(writer: Writer) -> None:
    def insert(v: int):  # type: ignore[no-untyped-def]
        def work(uow: UnitOfWork) -> int:
            uow._conn.execute("INSERT INTO t (v) VALUES (?)", (v,))
            if v == 13:
                raise ValueError("thirteen")
            return v
        return work

    await asyncio.gather(*(writer.run(insert(v)) for v in range(100, 130)))
    assert writer.commits < writer.jobs  # several jobs shared a commit
    results = await asyncio.gather(*(writer.run(insert(v)) for v in range(30)),
                                   return_exceptions=True)
    assert isinstance(results[13], ValueError)
    assert [r for r in results if not isinstance(r, Exception)] == [
        v for v in range(30) if v != 13]
    assert values(writer.path) == [v for v in range(30) if v != 13] + list(range(100, 130))


async def test_constraint_violation_reaches_only_its_caller(writer: Writer) -> None:
    await writer.run(lambda u: u._conn.execute("INSERT INTO t (v) VALUES (1)"))
    good = writer.run(lambda u: u._conn.execute("INSERT INTO t (v) VALUES (2)").rowcount)
    bad = writer.run(lambda u: u._conn.execute("INSERT INTO t (v) VALUES (1)").rowcount)
    results = await asyncio.gather(good, bad, return_exceptions=True)
    assert results[0] == 1
    assert isinstance(results[1], Conflict)
    assert values(writer.path) == [1, 2]


def test_callers_in_other_threads(writer: Writer) -> None:
    errors: list[BaseException] = []

    def worker(base: int) -> None:
        try:
            for v in range(base, base + 50):
                writer.run_sync(lambda u, v=v: u._conn.execute("INSERT INTO t (v) VALUES (?)",
                                                               (v,)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(values(writer.path)) == 200


async def test_full_durability_answers_after_the_wal_is_synced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """synchronous=FULL: callers are answered only after the WAL fsync; if it fails they get
    a StoreError (the change may not be on disk), not a success."""
    import broker.store.sqlite.writer as writer_module

    w = Writer(tmp_path / "d.sqlite", synchronous="FULL")
    w.start()
    try:
        await w.run(lambda u: u._conn.execute("CREATE TABLE t (v INTEGER)"))
        before = w.syncs
        await asyncio.gather(*(w.run(lambda u, v=v: u._conn.execute("INSERT INTO t VALUES (?)",
                                                                    (v,)))
                               for v in range(20)))
        assert w.syncs > before
        assert len(values(w.path)) == 20

        def broken_fsync(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(writer_module.os, "fsync", broken_fsync)
        with pytest.raises(StoreError, match="could not make the commit durable"):
            await w.run(lambda u: u._conn.execute("INSERT INTO t VALUES (99)"))
        # many at once: some batches are synced by the writer, others by the syncer thread
        outcomes = await asyncio.gather(*(w.run(lambda u, v=v: u._conn.execute(
            "INSERT INTO t VALUES (?)", (100 + v,))) for v in range(50)),
            return_exceptions=True)
        assert all(isinstance(o, StoreError) for o in outcomes), outcomes
    finally:
        monkeypatch.undo()
        w.stop()


def test_checkpointer_copies_the_wal_into_the_database(tmp_path: Path) -> None:
    """Commits never run the checkpoint themselves; the checkpointer thread does it."""
    writer = Writer(tmp_path / "c.sqlite")
    writer.checkpoint_seconds = 0.05
    writer.start()
    try:
        writer.run_sync(lambda u: u._conn.execute("CREATE TABLE t (x INTEGER)"))
        for n in range(50):
            writer.run_sync(lambda u, n=n: u._conn.execute("INSERT INTO t VALUES (?)", (n,)))
        deadline = time.monotonic() + 5
        while writer.checkpoints == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert writer.checkpoints >= 1
        reader = sqlite3.connect(tmp_path / "c.sqlite")
        assert reader.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 50
        assert reader.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000  # a new conn
        reader.close()
    finally:
        writer.stop()
    assert writer._upkeeper is None
