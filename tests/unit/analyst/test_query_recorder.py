"""The query recorder stores what association threads hand it in batches on a real SQLite
store, keeps records while the store is down and says how many it had to drop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from broker.analyst.query_log import QueryRecorder
from broker.config import DatabaseSettings
from broker.store.errors import StoreError
from broker.store.factory import open_store
from broker.store.query_log import QueryRecord


def record(n: int, calling: str = "CT01") -> QueryRecord:
    return QueryRecord(queried_at=1_700_000_000.0 + n, calling_ae=calling, called_ae="MWL",
                       peer="127.0.0.1:1000", keys={"Modality": "CT"}, identifier=b"\x08\x00",
                       transfer_syntax="1.2.840.10008.1.2", outcome="done", status=0,
                       matches=n, ms=1.5, step_ids=list(range(n)))


async def test_records_from_threads_are_stored_in_one_batch(tmp_path: Path) -> None:
    store = open_store(DatabaseSettings(path=str(tmp_path / "b.sqlite")))
    await asyncio.to_thread(store.writer.start)
    try:
        recorder = QueryRecorder(store.writer, node="n1", interval=3600)
        threads = [threading.Thread(target=lambda k=k: [recorder.record(record(k * 100 + i))
                                                         for i in range(50)])
                   for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert recorder.pending == 200
        assert await recorder.flush() == 200
        assert recorder.status() == {"recorded": 200, "stored": 200, "pending": 0,
                                     "dropped": 0}
    finally:
        await asyncio.to_thread(store.writer.stop)
        store.close()
    with sqlite3.connect(tmp_path / "b.sqlite") as conn:
        rows = conn.execute("SELECT COUNT(*), COUNT(DISTINCT node), MIN(status),"
                            " MAX(matches) FROM query_log").fetchone()
        steps = conn.execute("SELECT step_ids FROM query_log WHERE matches = 3").fetchone()
    assert rows == (200, 1, "0000", 349)
    assert steps == ("[0, 1, 2]",)


async def test_records_wait_while_the_store_is_down_and_the_oldest_go_first(
        tmp_path: Path) -> None:
    store = open_store(DatabaseSettings(path=str(tmp_path / "b.sqlite")))
    recorder = QueryRecorder(store.writer, max_pending=10)  # the writer is not running
    for n in range(15):
        recorder.record(record(n))
    assert recorder.pending == 10 and recorder.dropped == 5
    with pytest.raises(StoreError):
        await recorder.flush()
    assert recorder.pending == 10  # nothing lost by the failed attempt
    await asyncio.to_thread(store.writer.start)
    try:
        assert await recorder.flush() == 10
    finally:
        await asyncio.to_thread(store.writer.stop)
        store.close()
    with sqlite3.connect(tmp_path / "b.sqlite") as conn:
        kept = [r[0] for r in conn.execute("SELECT matches FROM query_log ORDER BY id")]
    assert kept == list(range(5, 15))


async def test_stop_stores_what_is_buffered(tmp_path: Path) -> None:
    store = open_store(DatabaseSettings(path=str(tmp_path / "b.sqlite")))
    await asyncio.to_thread(store.writer.start)
    try:
        recorder = QueryRecorder(store.writer, interval=3600)
        await recorder.start()
        recorder.record(record(1))
        await recorder.stop()
        assert recorder.stored == 1
    finally:
        await asyncio.to_thread(store.writer.stop)
        store.close()
