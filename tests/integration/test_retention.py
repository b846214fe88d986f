"""Retention: expired rows are purged through the single writer, in chunks; scheduled work,
recent rows, running MPPS and undelivered messages stay."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from broker import cli
from broker.app import Broker
from broker.config import ConfigError, apply_overrides, check
from broker.samples import order
from broker.store.repo import MppsRepo, OutboxRepo
from tests.conftest import Db, make_settings, msa, send

OLD = time.time() - 120 * 86400  # past every default age
UID = "1.2.826.0.1.3680043.8.498.{}"  # order(n)'s Study Instance UID is UID.format(n + 1)


def backdate(path: Path, sql: str, *args: Any) -> int:
    """Age rows the way time would (the broker keeps running meanwhile)."""
    conn = sqlite3.connect(path, timeout=10)
    try:
        with conn:
            return conn.execute(sql, args).rowcount
    finally:
        conn.close()


async def start_broker(folder: Path, **retention: Any) -> Broker:
    settings = make_settings(folder, idle_timeout=5.0, shutdown_grace=2.0)
    settings.retention.interval = 0  # purged by the test unless it says otherwise
    for key, value in retention.items():
        setattr(settings.retention, key, value)
    broker = Broker(settings)
    await broker.start()
    return broker


@pytest.fixture
async def retained(tmp_path: Path) -> AsyncIterator[Broker]:
    broker = await start_broker(tmp_path)
    try:
        yield broker
    finally:
        await broker.stop()


async def post(broker: Broker, *payloads: bytes) -> list[str]:
    return [msa(a)[1] for a in await send(broker.mllp.bound_port, *payloads)]


def statuses(db: Db, n: int) -> dict[str, str]:
    return {sps: s["_status"] for sps, s in db.steps(UID.format(n + 1)).items()}


async def test_purge_removes_what_expired_and_keeps_the_rest(retained: Broker) -> None:
    broker, db = retained, Db(retained.writer.path)
    path = broker.writer.path
    assert await post(broker, *(order(n).encode() for n in (1, 2, 3, 4)),
                      order(5, sps_ids=["S1", "S2"]).encode()) == ["AA"] * 5
    assert await post(broker, order(1, control_id="C1", order_control="CA",
                                    order_status="CA").encode(),
                      order(2, control_id="D2", order_control="DC", order_status="CA").encode(),
                      order(4, control_id="C4", order_control="CA", order_status="CA").encode(),
                      order(5, control_id="X5", order_control="XO",
                            sps_ids=["S2"]).encode()) == ["AA"] * 4
    assert statuses(db, 5) == {"S1": "CANCELED", "S2": "SCHEDULED"}
    step_of_1 = db.query("SELECT s.id FROM steps s JOIN procedures p ON p.id = s.procedure_fk"
                         " WHERE p.study_uid = ?", UID.format(2))[0][0]
    step_of_3 = db.query("SELECT s.id FROM steps s JOIN procedures p ON p.id = s.procedure_fk"
                         " WHERE p.study_uid = ?", UID.format(4))[0][0]

    def seed(conn: sqlite3.Connection) -> None:
        repo, outbox = MppsRepo(conn), OutboxRepo(conn)
        repo.link(repo.insert_mpps("9.1", "COMPLETED", {}, "CT01", False), [step_of_1])
        repo.link(repo.insert_mpps("9.3", "COMPLETED", {}, "CT01", False),
                  [step_of_1, step_of_3])
        repo.insert_mpps("9.old", "COMPLETED", {}, "CT01", True)
        repo.insert_mpps("9.running", "IN PROGRESS", {}, "CT01", True)
        repo.insert_mpps("9.recent", "DISCONTINUED", {}, "CT01", True)
        for name in ("old-delivered", "recent-delivered", "old-dead", "old-pending"):
            pk = outbox.enqueue("ris", name, name, "ORM^O01", "MSH|...")
            if "delivered" in name:
                outbox.delivered(pk, "MSA|AA")
            elif "dead" in name:
                outbox.dead(pk, "AE from the RIS")

    await broker.writer.run(seed)
    # a resend of order 3 (a duplicate pointing at the original in the log) stays recent
    assert await post(broker, order(3).encode()) == ["AA"]
    assert backdate(path, "UPDATE steps SET updated_at = ?", OLD) == 6
    backdate(path, "UPDATE steps SET updated_at = ? WHERE procedure_fk = "
             "(SELECT id FROM procedures WHERE study_uid = ?)", time.time(), UID.format(5))
    backdate(path, "UPDATE mpps SET updated_at = ? WHERE sop_instance_uid NOT IN "
             "('9.3', '9.recent')", OLD)
    backdate(path, "UPDATE outbox SET updated_at = ? WHERE order_key LIKE 'old-%'", OLD)
    backdate(path, "UPDATE message_log SET received_at = ? WHERE duplicate_of IS NULL", OLD)
    logged = db.query("SELECT COUNT(*) FROM message_log")[0][0]

    expected = {"steps": 3, "mpps": 2, "message_log": logged - 1, "outbox_delivered": 1}
    assert await asyncio.to_thread(broker.purger.expired) == expected
    removed = await asyncio.to_thread(broker.purger.purge)

    assert removed == {"steps": 3, "procedures": 2, "mpps": 2, "message_log": logged - 1,
                       "outbox": 1}
    assert db.query("SELECT study_uid FROM procedures ORDER BY id") == [
        (UID.format(n + 1),) for n in (3, 4, 5)]
    assert statuses(db, 3) == {"SPS0000003": "SCHEDULED"}  # old but scheduled
    assert statuses(db, 4) == {"SPS0000004": "CANCELED"}  # cancelled recently
    assert statuses(db, 5) == {"S2": "SCHEDULED"}  # the cancelled S1 went, the procedure stays
    assert [r[0] for r in db.query("SELECT sop_instance_uid FROM mpps ORDER BY id")] == [
        "9.3", "9.running", "9.recent"]  # 9.3 is recent and covers a step that is kept
    assert db.query("SELECT COUNT(*) FROM mpps_steps")[0][0] == 1
    assert db.query("SELECT order_key FROM outbox ORDER BY id") == [
        ("recent-delivered",), ("old-dead",), ("old-pending",)]
    assert db.query("SELECT control_id, duplicate_of FROM message_log") == [("MSG00000003", None)]
    # the surviving resend still answers the next resend as a duplicate, applied once
    assert await post(broker, order(3).encode()) == ["AA"]
    assert db.query("SELECT COUNT(*) FROM message_log WHERE duplicate_of IS NOT NULL")[0][0] == 1
    assert await asyncio.to_thread(broker.purger.purge) == {}


async def test_purge_deletes_in_chunks_between_other_writes(tmp_path: Path) -> None:
    broker = await start_broker(tmp_path, chunk=10, message_log_days=0)
    try:
        sps = [f"S{i:02d}" for i in range(45)]
        assert await post(broker, order(1, sps_ids=sps).encode(),
                          order(1, control_id="C1", order_control="CA",
                                order_status="CA").encode()) == ["AA", "AA"]
        backdate(broker.writer.path, "UPDATE steps SET updated_at = ?", OLD)
        jobs = broker.writer.jobs
        purge = asyncio.create_task(asyncio.to_thread(broker.purger.purge))
        assert await post(broker, order(2).encode()) == ["AA"]  # not held up by the purge
        assert await purge == {"steps": 45, "procedures": 1, "mpps": 0}
        assert broker.writer.jobs - jobs >= 5 + 1  # five chunks of at most 10, one message
        assert Db(broker.writer.path).counts()["steps"] == 1
    finally:
        await broker.stop()


async def test_the_running_broker_purges_periodically(tmp_path: Path) -> None:
    broker = await start_broker(tmp_path, interval=0.2)
    try:
        assert await post(broker, order(1).encode(), order(
            1, control_id="C1", order_control="CA", order_status="CA").encode()) == ["AA"] * 2
        backdate(broker.writer.path, "UPDATE steps SET updated_at = ?", OLD)
        db = Db(broker.writer.path)
        for _ in range(100):
            if db.counts()["steps"] == 0:
                break
            await asyncio.sleep(0.1)
        assert db.counts() == {"patients": 1, "procedures": 0, "steps": 0, "step_stations": 0}
        assert broker.purger.runs >= 1
    finally:
        await broker.stop()


def test_purge_command_counts_then_deletes(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    async def make() -> None:
        broker = await start_broker(tmp_path)
        try:
            assert await post(broker, order(1).encode(), order(
                1, control_id="C1", order_control="CA", order_status="CA").encode()) == ["AA"] * 2
        finally:
            await broker.stop()

    asyncio.run(make())
    db_path = tmp_path / "broker.sqlite"
    backdate(db_path, "UPDATE steps SET updated_at = ?", OLD)
    options = ["-o", f"database.path={db_path}", "-o", "retention.message_log_days=0"]
    assert cli.main(["purge", "--dry-run", *options]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^steps +older than 30 days: 1 would be deleted$", out, re.M)
    assert "message_log" not in out
    assert Db(db_path).counts()["steps"] == 1
    assert cli.main(["purge", *options]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^steps +1 deleted$", out, re.M)
    assert re.search(r"^procedures +1 deleted$", out, re.M)
    assert Db(db_path).counts()["steps"] == 0
    assert cli.main(["purge", "-o", f"database.path={tmp_path / 'none.sqlite'}"]) == 2


@pytest.mark.parametrize("override", ["retention.steps_days=-1", "retention.chunk=0"])
def test_negative_ages_and_empty_chunks_are_refused(override: str) -> None:
    from broker.config import Settings

    with pytest.raises(ConfigError, match=override.split("=")[0]):
        apply_overrides(Settings(), [override])
    check(Settings())
