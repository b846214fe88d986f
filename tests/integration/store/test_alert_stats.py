"""What the alert rules read from the database (outbox by destination, storage commitments
timed out, completion notices overdue, steps not started, senders' last messages): the same
answers from a SQLite store and a PostgreSQL store holding the same rows."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.config import DatabaseSettings
from broker.hl7.message import parse
from broker.mapping.engine import map_message
from broker.mapping.schema import load_mappings
from broker.metrics import LATE_STEP_MINUTES
from broker.model.orders import StepStatus
from broker.store import admin_queries, alert_queries
from broker.store.factory import Store, open_store
from broker.store.messages import MessageRecord
from broker.store.sqlite.dialect import SQLITE
from broker.store.unit_of_work import UnitOfWork
from broker.workflow.orders import apply
from tests.support.postgres import PostgresCluster
from tests.support.samples import order

ROOT = Path(__file__).resolve().parents[3]
#: minutes between each step's scheduled start and now (negative: still to come); the one
#: at index 2 is STARTED (an MPPS came), the last one has a date and no time
LATE = [20, 45, 90, 90, 180, 300, 13 * 60, -30, 120]


def hl7_start(minutes_ago: float, now: float) -> str:
    return time.strftime("%Y%m%d%H%M", time.localtime(now - minutes_ago * 60))


def fill(store: Store, now: float) -> None:
    mappings = load_mappings(ROOT / "mappings")
    for n, minutes in enumerate(LATE):
        start = hl7_start(minutes, now)
        sample = order(n, start=start[:8] if n == len(LATE) - 1 else start)
        events = map_message(parse(sample.text(), "utf_8"), mappings)
        store.writer.run_sync(lambda uow, events=events: [apply(uow.orders, e) for e in events])

    def rest(uow: UnitOfWork) -> None:
        [step] = uow.mpps.steps_of_study(order(2).study_uid or "")
        uow.mpps.set_step_status(step, StepStatus.STARTED)
        at = uow.at
        mpps = [uow.mpps.insert_mpps(f"1.2.3.{k}", "COMPLETED", {}, "CT01", False)
                for k in range(3)]
        for pk, (state, timeout_in) in enumerate(
                [("timed_out", -60), ("requested", -5), ("requested", 600),
                 ("timed_out", -7200), ("queued", -60)]):
            c = uow.completion
            c.new_commitment(f"2.25.{pk}", mpps[0], "archive", now + timeout_in, [])
            if state == "requested":
                c.commitment_requested(f"2.25.{pk}", timeout_in)
            elif state == "timed_out":
                row = c.commitment(f"2.25.{pk}")
                assert row is not None
                c.commitment_timed_out(row.id)
        uow.completion.start_completion(mpps[0], now - 30)  # overdue
        uow.completion.start_completion(mpps[1], now + 300)  # not yet
        uow.completion.start_completion(mpps[2], now - 30)
        uow.completion.decide_completion(mpps[2], "sent", "")  # decided: not waiting
        for dest, state, created in [("ris", "pending", now - 400), ("ris", "pending", now - 100),
                                     ("ris", "dead", now - 50), ("ris", "delivered", now - 900),
                                     ("archive", "dead", now - 10), ("pacs", "delivered", now)]:
            pk = at(created).outbox.enqueue(dest, "order", f"C{created}", "ORM^O01", "MSH|")
            if state == "dead":
                uow.outbox.dead(pk, "refused")
            elif state == "delivered":
                uow.outbox.delivered(pk, "MSA|AA")
        for k, (app, fac, received) in enumerate(
                [("RIS", "HOSP", now - 60), ("RIS", "HOSP", now - 30), ("LAB", "", now - 3600),
                 ("OLD", "HOSP", now - 30 * 86400)]):
            uow.messages.log_message(MessageRecord(received, "127.0.0.1:1", app, fac, f"X{k}",
                                                   "ORM^O01", "ascii", "AA", "", "", b"MSH|"))
    store.writer.run_sync(rest)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[float, list[Store]]]:
    now = time.time()
    with PostgresCluster() as pg:
        made = [open_store(DatabaseSettings(path=str(tmp_path_factory.mktemp("alerts")
                                                     / "a.sqlite"), url="")),
                open_store(DatabaseSettings(url=pg.create_database("alerts")), "t")]
        try:
            for store in made:
                store.writer.start()
                fill(store, now)
            yield now, made
        finally:
            for store in made:
                store.writer.stop()
                store.close()


async def answers(store: Store, now: float) -> dict[str, Any]:
    reader = await store.admin_reader()
    try:
        stats = await reader.outbox_stats()
        flow = await reader.workflow_stats(LATE_STEP_MINUTES)
        senders = await reader.senders_last_seen(now - 7 * 86400)
    finally:
        await reader.close()
    return {"totals": (stats.depth, stats.dead, stats.oldest_pending_at),
            "by": {k: (v.depth, v.dead, v.oldest_pending_at)
                   for k, v in stats.by_destination.items()},
            "commitments": flow.commitments_timed_out, "completions": flow.completions_overdue,
            "late": flow.steps_not_started,
            "senders": [(a, f, round(t, 3)) for a, f, t in senders]}


async def test_both_backends_answer_the_alert_queries_alike(
        stores: tuple[float, list[Store]]) -> None:
    now, made = stores
    sqlite, postgres = [await answers(store, now) for store in made]
    assert sqlite == postgres
    oldest = pytest.approx(now - 400, abs=0.01)
    assert sqlite["totals"] == (2, 2, oldest)
    assert sqlite["by"] == {"ris": (2, 1, oldest), "archive": (0, 1, None)}  # not "pacs"
    # timed out within the hour, and requested past its timeout (not yet swept); not the one
    # timed out two hours ago, nor one still queued (the outbox's alerts cover that)
    assert sqlite["commitments"] == 2
    assert sqlite["completions"] == 1
    # SCHEDULED, with a start time, between 12 hours and N minutes ago
    assert sqlite["late"] == {15: 5, 30: 4, 60: 3, 120: 2, 240: 1}
    assert sqlite["senders"] == [("LAB", "", round(now - 3600, 3)),
                                 ("RIS", "HOSP", round(now - 30, 3))]


class Recorder:
    """An asyncio read connection over a sqlite3 one that keeps every statement it ran."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.statements: list[tuple[str, Any]] = []

    async def rows(self, sql: str, args: Any = ()) -> list[dict[str, Any]]:
        self.statements.append((sql, args))
        cursor = self.conn.execute(sql, args)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


async def test_each_scrape_query_is_an_index_search(stores: tuple[float, list[Store]]) -> None:
    """Cheap at every scrape: each statement searches an index, none scans a table."""
    now, (sqlite, _) = stores
    conn = sqlite3.connect(sqlite.description)
    try:
        recorder = Recorder(conn)
        await alert_queries.workflow_stats(recorder, SQLITE, LATE_STEP_MINUTES)  # type: ignore[arg-type]
        await admin_queries.outbox_stats(recorder)  # type: ignore[arg-type]
        await alert_queries.senders_last_seen(recorder, now - 86400)  # type: ignore[arg-type]
        plans = {}
        for sql, args in recorder.statements:
            if "sqlite_master" in sql:
                continue
            table = sql.split(" FROM ")[1].split()[0]
            plans[table] = " | ".join(str(r[-1]) for r in conn.execute(
                "EXPLAIN QUERY PLAN " + sql, args))
    finally:
        conn.close()
    assert set(plans) == {"commitments", "completions", "steps", "outbox", "message_log"}
    for table, index in [("commitments", "commitments_waiting"),
                         ("completions", "completions_waiting"),
                         ("steps", "steps_status_start"), ("outbox", "outbox_due"),
                         ("message_log", "message_log_received")]:
        assert index in plans[table], plans[table]
        assert f"SCAN {table}" not in plans[table], plans[table]
