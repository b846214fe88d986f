"""Retention: expired rows are purged through the single writer, in chunks; scheduled work,
recent rows, running MPPS and undelivered messages stay."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from broker import cli
from broker.app import Broker
from broker.config import ConfigError
from broker.config.checks import check
from broker.config.loading import apply_overrides
from broker.store.unit_of_work import UnitOfWork
from tests.support.broker import make_settings, mappings_with_orc18_station
from tests.support.db import Db
from tests.support.mllp import msa, send
from tests.support.samples import order

OLD = time.time() - 120 * 86400  # past every default age
UID = "1.2.826.0.1.3680043.8.498.{}"  # order(n)'s Study Instance UID is UID.format(n + 1)


def backdate(path: Path | str, sql: str, *args: Any) -> int:
    """Age rows the way time would (the broker keeps running meanwhile)."""
    return Db(path).execute(sql, *args)


async def start_broker(folder: Path, mappings: Path | None = None, **retention: Any
                       ) -> Broker:
    settings = make_settings(folder, idle_timeout=5.0, shutdown_grace=2.0)
    if mappings is not None:
        settings.mappings.directory = str(mappings)
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
    broker, db = retained, Db(retained.settings.database.path)
    path = broker.settings.database.path
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

    def seed(uow: UnitOfWork) -> None:
        repo, outbox = uow.mpps, uow.outbox
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

    # order 1's cancelled step stays: the recent MPPS 9.3 covers it (a kept MPPS keeps its
    # steps); the old 9.1 goes by its own age, with its link to that step
    expected = {"steps": 2, "procedures": 1, "mpps": 2, "mpps_steps": 1,
                "message_log": logged - 1, "outbox": 1}
    assert await asyncio.to_thread(broker.purger.expired) == expected
    removed = await asyncio.to_thread(broker.purger.purge)

    assert removed == expected
    assert db.query("SELECT study_uid FROM procedures ORDER BY id") == [
        (UID.format(n + 1),) for n in (1, 3, 4, 5)]
    assert statuses(db, 1) == {"SPS0000001": "CANCELED"}
    assert statuses(db, 3) == {"SPS0000003": "SCHEDULED"}  # old but scheduled
    assert statuses(db, 4) == {"SPS0000004": "CANCELED"}  # cancelled recently
    assert statuses(db, 5) == {"S2": "SCHEDULED"}  # the cancelled S1 went, the procedure stays
    assert [r[0] for r in db.query("SELECT sop_instance_uid FROM mpps ORDER BY id")] == [
        "9.3", "9.running", "9.recent"]  # 9.3 is recent: it and both its steps stay
    assert db.query("SELECT COUNT(*) FROM mpps_steps")[0][0] == 2
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
        backdate(broker.settings.database.path, "UPDATE steps SET updated_at = ?", OLD)
        jobs = broker.writer.jobs
        purge = asyncio.create_task(asyncio.to_thread(broker.purger.purge))
        assert await post(broker, order(2).encode()) == ["AA"]  # not held up by the purge
        assert await purge == {"steps": 45, "procedures": 1}
        assert broker.writer.jobs - jobs >= 5 + 1  # five chunks of at most 10, one message
        assert Db(broker.settings.database.path).counts()["steps"] == 1
    finally:
        await broker.stop()


async def test_the_running_broker_purges_periodically(tmp_path: Path) -> None:
    broker = await start_broker(tmp_path, interval=0.2)
    try:
        assert await post(broker, order(1).encode(), order(
            1, control_id="C1", order_control="CA", order_status="CA").encode()) == ["AA"] * 2
        backdate(broker.settings.database.path, "UPDATE steps SET updated_at = ?", OLD)
        db = Db(broker.settings.database.path)
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
    assert re.search(r"^steps +1 would be deleted$", out, re.M)
    assert re.search(r"^procedures +1 would be deleted$", out, re.M)
    assert "# older than: steps 30 days, mpps 30 days, outbox_delivered 30 days" in out
    assert "message_log" not in out
    assert Db(db_path).counts()["steps"] == 1
    assert cli.main(["purge", *options]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^steps +1 deleted$", out, re.M)
    assert re.search(r"^procedures +1 deleted$", out, re.M)
    assert Db(db_path).counts()["steps"] == 0
    missing = f"database.path={tmp_path / 'none.sqlite'}"
    assert cli.main(["purge", "-o", missing, "-o", "database.url="]) == 2


@pytest.mark.parametrize("override", ["retention.steps_days=-1", "retention.chunk=0"])
def test_negative_ages_and_empty_chunks_are_refused(override: str) -> None:
    from broker.config import Settings

    with pytest.raises(ConfigError, match=override.split("=")[0]):
        apply_overrides(Settings(), [override])
    check(Settings())


def table_counts(path: Path) -> dict[str, int]:
    db = Db(path)
    tables = sorted(t for t in db.tables() if not t.startswith("sqlite_"))
    return {t: db.query(f"SELECT COUNT(*) FROM {t}")[0][0] for t in tables}


async def test_a_kept_mpps_keeps_the_steps_it_covers(tmp_path: Path) -> None:
    broker = await start_broker(tmp_path, mpps_days=0, message_log_days=0)
    try:
        assert await post(broker, order(1).encode(), order(2).encode()) == ["AA", "AA"]
        db = Db(broker.settings.database.path)
        step_of_1 = db.query("SELECT s.id FROM steps s JOIN procedures p ON p.id = "
                             "s.procedure_fk WHERE p.study_uid = ?", UID.format(2))[0][0]

        def seed(uow: UnitOfWork) -> None:
            repo = uow.mpps
            repo.link(repo.insert_mpps("9.done", "COMPLETED", {}, "CT01", False), [step_of_1])

        await broker.writer.run(seed)
        backdate(broker.settings.database.path,
                 "UPDATE steps SET status = 'COMPLETED', updated_at = ?", OLD)
        backdate(broker.settings.database.path, "UPDATE mpps SET updated_at = ?", OLD)
        # mpps_days 0 keeps 9.done for ever, and so the step it covers and its procedure;
        # order 2's ended step, covered by no MPPS, goes
        expected = {"steps": 1, "procedures": 1}
        assert await asyncio.to_thread(broker.purger.expired) == expected
        assert await asyncio.to_thread(broker.purger.purge) == expected
        assert [r[0] for r in db.query("SELECT sop_instance_uid FROM mpps")] == ["9.done"]
        assert db.query("SELECT COUNT(*) FROM mpps_steps")[0][0] == 1
        assert list(db.steps(UID.format(2))) == ["SPS0000001"]
        assert db.query("SELECT study_uid FROM procedures") == [(UID.format(2),)]
    finally:
        await broker.stop()


async def test_the_dry_run_counts_every_row_the_purge_deletes(tmp_path: Path) -> None:
    broker = await start_broker(tmp_path, mappings_with_orc18_station(tmp_path),
                                message_log_days=0)
    try:
        assert await post(broker, order(1, station="CT01~CT02").encode(),
                          order(2, station="CT01", sps_ids=["A", "B"]).encode()) == ["AA"] * 2
        path = broker.settings.database.path
        db = Db(path)
        assert db.query("SELECT COUNT(*) FROM step_stations")[0][0] == 4
        steps = [r[0] for r in db.query("SELECT id FROM steps ORDER BY id")]

        def seed(uow: UnitOfWork) -> None:
            repo = uow.mpps
            conn = uow._conn
            for n, step in enumerate(steps):
                pk = repo.insert_mpps(f"9.{n}", "COMPLETED", {}, "CT01", False)
                repo.link(pk, [step])
                conn.execute("INSERT INTO mpps_instances (mpps_fk, sop_instance_uid) "
                             "VALUES (?, ?)", (pk, f"8.{n}"))
                commitment = conn.execute(
                    "INSERT INTO commitments (transaction_uid, mpps_fk, archive, created_at, "
                    "timeout_at) VALUES (?, ?, 'archive', 0, 0) RETURNING id",
                    (f"7.{n}", pk)).fetchone()[0]
                conn.execute("INSERT INTO commitment_instances (commitment_fk, "
                             "sop_instance_uid, sop_class_uid) VALUES (?, ?, '1.2')",
                             (commitment, f"8.{n}"))
                conn.execute("INSERT INTO completions (mpps_fk, deadline) VALUES (?, 0)", (pk,))

        await broker.writer.run(seed)
        backdate(path, "UPDATE steps SET status = 'COMPLETED', updated_at = ?", OLD)
        backdate(path, "UPDATE mpps SET updated_at = ? WHERE sop_instance_uid != '9.2'", OLD)
        before = table_counts(path)
        planned = await asyncio.to_thread(broker.purger.expired)
        removed = await asyncio.to_thread(broker.purger.purge)
        after = table_counts(path)
        gone = {t: before[t] - after[t] for t in before if before[t] != after[t]}
        assert planned == removed == gone
        # the MPPS 9.2 is recent: it keeps step B, and so order 2's procedure
        assert gone == {"steps": 2, "procedures": 1, "step_stations": 3, "mpps": 2,
                        "mpps_steps": 2, "mpps_instances": 2, "commitments": 2,
                        "commitment_instances": 2, "completions": 2}
    finally:
        await broker.stop()
