"""The outbox worker (broker.outbound.outbox) over a real SQLite store and a real MLLP
listener on loopback: order per lane, retry with backoff, dead letters, settling in the
writer's transaction, MSA-2 checks and wake-ups."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.outbound.outbox import Destination, OutboxWorker, RequestDestination
from broker.store.errors import StoreError
from broker.store.repo import OutboxRow
from broker.store.sqlite.readers import outbox_reader
from broker.store.sqlite.writer import SqliteWriter as Writer
from broker.store.unit_of_work import UnitOfWork
from tests.support.db import Db
from tests.support.ris import Ris
from tests.support.waiting import until

Settled = list[tuple[str, str, str]]


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Writer]:
    w = Writer(tmp_path / "broker.sqlite")
    w.start()
    try:
        yield w
    finally:
        w.stop()


@pytest.fixture
async def ris() -> AsyncIterator[Ris]:
    r = await Ris().start()
    try:
        yield r
    finally:
        await r.stop()


def message(control_id: str, order_key: str = "ORD1") -> str:
    return (f"MSH|^~\\&|MWLBROKER|RADIOLOGY|RIS|HOSP|20261122||ORM^O01|{control_id}|P|2.3.1\r"
            f"ORC|SC|{order_key}||||IP\r")


async def enqueue(writer: Writer, control_id: str, order_key: str = "ORD1",
                  destination: str = "ris", due_at: float | None = None) -> int:
    """Queue one status message through the writer, as the flows do."""
    def job(uow: UnitOfWork) -> int:
        return uow.outbox.enqueue(destination, order_key, control_id, "ORM^O01",
                                  message(control_id, order_key), due_at)
    return await writer.run(job)


def entry(writer: Writer, control_id: str) -> dict[str, Any]:
    rows = Db(writer.path).query(
        "SELECT state, attempts, last_error, next_attempt_at, updated_at, ack FROM outbox "
        "WHERE control_id = ?", control_id)
    assert rows, f"no outbox entry {control_id}"
    state, attempts, last_error, next_at, updated, ack = rows[0]
    return {"state": state, "attempts": attempts, "last_error": last_error,
            "next_attempt_at": next_at, "updated_at": updated, "ack": ack}


def state(writer: Writer, control_id: str) -> str:
    return str(entry(writer, control_id)["state"])


def sent(ris: Ris) -> list[str]:
    """The MSH-10 of each message the RIS received, in order."""
    return [m.split("\r")[0].split("|")[9] for m in ris.received]


@pytest.fixture
async def worker_for(writer: Writer) -> AsyncIterator[Any]:
    """Builds started workers on the test's store (stopped at the end); each records the
    outcomes it settles in ``worker.settled``."""
    started: list[OutboxWorker] = []

    async def build(*destinations: Destination | RequestDestination,
                    **options: Any) -> OutboxWorker:
        settled: Settled = []

        def on_settled(uow: UnitOfWork, row: OutboxRow, outcome: str, reason: str) -> None:
            assert isinstance(uow, UnitOfWork)
            settled.append((row.control_id, outcome, reason))
        options = {"backoff_base": 0.05, "backoff_max": 0.2, "poll": 0.05,
                   "on_settled": on_settled, **options}
        worker = OutboxWorker(outbox_reader(writer.path), writer, destinations, **options)
        worker.settled = settled  # type: ignore[attr-defined]
        await worker.start()
        started.append(worker)
        return worker
    try:
        yield build
    finally:
        for worker in started:
            await stop(worker)


async def stop(worker: OutboxWorker) -> None:
    """``worker.stop()``, which must return after one cancellation of each lane."""
    async with asyncio.timeout(10):
        await worker.stop()


def to(ris: Ris, name: str = "ris", timeout: float = 2.0, charset: str = "") -> Destination:
    return Destination(name, "127.0.0.1", ris.port, timeout=timeout, charset=charset)


async def test_a_message_taken_by_the_ris_is_delivered_with_its_ack(
        writer: Writer, ris: Ris, worker_for: Any) -> None:
    await enqueue(writer, "C1")
    worker = await worker_for(to(ris))
    await until(lambda: state(writer, "C1") == "delivered")
    done = entry(writer, "C1")
    assert done["attempts"] == 1 and done["last_error"] == ""
    assert "MSA|AA|C1" in done["ack"]
    assert sent(ris) == ["C1"]
    assert worker.settled == [("C1", "delivered", "")]
    assert (worker.delivered, worker.dead, worker.retried) == (1, 0, 0)


async def test_messages_of_one_order_go_in_queue_order(
        writer: Writer, ris: Ris, worker_for: Any) -> None:
    for n in range(1, 6):
        await enqueue(writer, f"C{n}")
    await worker_for(to(ris))
    await until(lambda: state(writer, "C5") == "delivered")
    assert sent(ris) == ["C1", "C2", "C3", "C4", "C5"]


async def test_a_later_message_of_an_order_waits_for_the_earlier_one(
        writer: Writer, ris: Ris, worker_for: Any) -> None:
    """The first message of ORD1 is due only later: the second waits behind it, while
    another order's message goes out."""
    await enqueue(writer, "FIRST", "ORD1", due_at=time.time() + 3600)
    await enqueue(writer, "SECOND", "ORD1")
    await enqueue(writer, "OTHER", "ORD2")
    await worker_for(to(ris))
    await until(lambda: state(writer, "OTHER") == "delivered")
    await asyncio.sleep(0.3)
    assert sent(ris) == ["OTHER"]
    assert state(writer, "FIRST") == state(writer, "SECOND") == "pending"


async def test_a_stuck_destination_does_not_hold_up_another(
        writer: Writer, ris: Ris, worker_for: Any) -> None:
    archive = await Ris(mode="silent").start()
    try:
        await enqueue(writer, "TO-ARCHIVE", "ORD1", destination="archive")
        await enqueue(writer, "TO-RIS", "ORD1", destination="ris")
        await worker_for(to(ris), to(archive, "archive", timeout=5.0))
        await until(lambda: state(writer, "TO-RIS") == "delivered")
        assert state(writer, "TO-ARCHIVE") == "pending"
    finally:
        await archive.stop()


async def test_silence_is_retried_with_backoff_until_the_ris_answers(
        writer: Writer, ris: Ris, worker_for: Any) -> None:
    ris.mode = "silent"
    await enqueue(writer, "C1")
    worker = await worker_for(to(ris, timeout=0.2))
    await until(lambda: entry(writer, "C1")["attempts"] >= 2)
    waiting = entry(writer, "C1")
    assert waiting["state"] == "pending"
    assert "no answer" in waiting["last_error"] or "Timeout" in waiting["last_error"]
    ris.mode = "AA"
    await until(lambda: state(writer, "C1") == "delivered")
    assert entry(writer, "C1")["last_error"] == ""
    assert worker.retried >= 2 and worker.delivered == 1
    assert ("C1", "delivered", "") in worker.settled
    assert {outcome for _, outcome, _ in worker.settled} == {"retry", "delivered"}


async def test_the_first_retry_waits_about_the_base_delay(
        writer: Writer, ris: Ris, worker_for: Any) -> None:
    ris.mode = "cut"
    await enqueue(writer, "C1")
    await worker_for(to(ris), backoff_base=30.0, backoff_max=600.0)
    await until(lambda: entry(writer, "C1")["attempts"] == 1)
    retried = entry(writer, "C1")
    delay = retried["next_attempt_at"] - retried["updated_at"]
    assert 30.0 * 0.8 - 0.5 <= delay <= 30.0 * 1.2 + 0.5  # base · 2^0, ±20 % jitter
    assert retried["state"] == "pending"


@pytest.mark.parametrize(("earlier", "expected"), [(2, 40.0), (3, 60.0)])
async def test_the_backoff_doubles_per_attempt_up_to_its_maximum(
        writer: Writer, ris: Ris, worker_for: Any, earlier: int, expected: float) -> None:
    """base · 2^attempts (10 · 4 = 40 s after two failures; 10 · 8 = 80 s capped to 60 s)."""
    ris.mode = "cut"
    pk = await enqueue(writer, "C1")

    def earlier_failures(uow: UnitOfWork) -> None:
        for _ in range(earlier):
            uow.outbox.retry_later(pk, "earlier failure", uow.now)
    await writer.run(earlier_failures)
    await worker_for(to(ris), backoff_base=10.0, backoff_max=60.0)
    await until(lambda: entry(writer, "C1")["attempts"] == earlier + 1)
    retried = entry(writer, "C1")
    delay = retried["next_attempt_at"] - retried["updated_at"]
    assert expected * 0.8 - 0.5 <= delay <= expected * 1.2 + 0.5


async def test_a_refusal_is_a_dead_letter_with_the_reason_and_is_not_retried(
        writer: Writer, ris: Ris, worker_for: Any) -> None:
    ris.mode = "AE"
    await enqueue(writer, "C1")
    await enqueue(writer, "C2")  # same order: goes once C1 is settled
    worker = await worker_for(to(ris))
    await until(lambda: state(writer, "C2") == "dead")
    dead = entry(writer, "C1")
    assert dead["state"] == "dead" and dead["attempts"] == 1
    assert dead["last_error"] == "ris answered AE: order unknown here"
    assert "MSA|AE|C1" in dead["ack"]
    await asyncio.sleep(0.3)
    assert sent(ris) == ["C1", "C2"]
    assert worker.settled[0] == ("C1", "dead", "ris answered AE: order unknown here")
    assert worker.dead == 2


async def test_a_message_for_a_destination_not_configured_is_a_dead_letter(
        writer: Writer, ris: Ris, worker_for: Any) -> None:
    await enqueue(writer, "C1", destination="gone")
    worker = await worker_for(to(ris))
    await until(lambda: state(writer, "C1") == "dead")
    assert entry(writer, "C1")["last_error"] == "destination 'gone' is not configured"
    assert sent(ris) == []
    assert worker.settled == [("C1", "dead", "destination 'gone' is not configured")]


async def test_an_ack_of_another_message_is_not_taken(
        writer: Writer, ris: Ris, worker_for: Any) -> None:
    ris.mode = "wrong_msa2"
    await enqueue(writer, "C1")
    worker = await worker_for(to(ris, timeout=0.3))
    await until(lambda: entry(writer, "C1")["attempts"] >= 1)
    waiting = entry(writer, "C1")
    assert waiting["state"] == "pending"
    assert waiting["last_error"] in (  # the stray ack was read, the right one never came
        "no answer within 0.3 s", "TimeoutError: no acknowledgement of C1 within 0.3 s")
    ris.mode = "AA"
    await until(lambda: state(writer, "C1") == "delivered")
    assert worker.delivered == 1


async def test_a_stray_ack_before_the_right_one_is_skipped(
        writer: Writer, ris: Ris, worker_for: Any) -> None:
    ris.mode = "late_ack"
    await enqueue(writer, "C1")
    worker = await worker_for(to(ris))
    await until(lambda: state(writer, "C1") == "delivered")
    done = entry(writer, "C1")
    assert done["attempts"] == 1 and "MSA|AA|C1" in done["ack"]
    assert worker.retried == 0


async def test_wake_sends_a_new_message_before_the_next_poll(
        writer: Writer, ris: Ris, worker_for: Any) -> None:
    worker = await worker_for(to(ris), poll=60.0)
    await asyncio.sleep(0.2)  # the lanes found nothing and sleep for a minute
    await enqueue(writer, "C1")
    worker.wake()
    await until(lambda: state(writer, "C1") == "delivered", seconds=5.0)


async def test_without_a_wake_a_new_message_waits_for_the_poll(
        writer: Writer, ris: Ris, worker_for: Any) -> None:
    await worker_for(to(ris), poll=60.0)
    await asyncio.sleep(0.2)
    await enqueue(writer, "C1")
    await asyncio.sleep(0.5)
    assert state(writer, "C1") == "pending"


async def test_the_settle_callback_writes_in_the_same_transaction(
        writer: Writer, ris: Ris, worker_for: Any) -> None:
    """What ``on_settled`` does through its unit of work commits with the outcome."""
    def follow_up(uow: UnitOfWork, row: OutboxRow, outcome: str, reason: str) -> None:
        if outcome == "delivered" and row.control_id == "C1":
            uow.outbox.enqueue("ris", row.order_key, "C1-FOLLOW-UP", "ORM^O01",
                               message("C1-FOLLOW-UP", row.order_key))
    await enqueue(writer, "C1")
    worker = await worker_for(to(ris), on_settled=follow_up)
    await until(lambda: state(writer, "C1") == "delivered")
    assert Db(writer.path).query(
        "SELECT state FROM outbox WHERE control_id = 'C1-FOLLOW-UP'") != []
    worker.wake()
    await until(lambda: state(writer, "C1-FOLLOW-UP") == "delivered")
    assert sent(ris) == ["C1", "C1-FOLLOW-UP"]


async def test_pending_messages_survive_a_restart_of_the_worker(
        writer: Writer, ris: Ris, worker_for: Any) -> None:
    ris.mode = "silent"
    await enqueue(writer, "C1")
    first = OutboxWorker(outbox_reader(writer.path), writer, [to(ris, timeout=0.2)],
                         backoff_base=0.05, backoff_max=0.2, poll=0.05)
    await first.start()
    try:
        await until(lambda: entry(writer, "C1")["attempts"] >= 1)
    finally:
        await stop(first)
    ris.mode = "AA"
    await worker_for(to(ris))
    await until(lambda: state(writer, "C1") == "delivered")


async def test_a_request_destination_settles_with_what_its_request_answers(
        writer: Writer, worker_for: Any) -> None:
    calls: list[str] = []

    def send(row: OutboxRow) -> tuple[str, str, str]:
        calls.append(row.control_id)
        if row.control_id == "BOOM" and calls.count("BOOM") == 1:
            raise ConnectionError("archive away")
        return {"OK": ("delivered", "", "done"), "NO": ("dead", "refused by archive", ""),
                "BOOM": ("delivered", "", "")}[row.control_id]
    await enqueue(writer, "OK", "S1", destination="archive")
    await enqueue(writer, "NO", "S2", destination="archive")
    await enqueue(writer, "BOOM", "S3", destination="archive")
    worker = await worker_for(RequestDestination("archive", send))
    await until(lambda: state(writer, "BOOM") == "delivered")
    assert state(writer, "OK") == "delivered" and entry(writer, "OK")["ack"] == "done"
    assert state(writer, "NO") == "dead"
    assert entry(writer, "NO")["last_error"] == "refused by archive"
    assert ("BOOM", "retry", "ConnectionError: archive away") in worker.settled
    assert entry(writer, "BOOM")["attempts"] == 2


async def test_a_message_the_destination_charset_cannot_carry_is_a_dead_letter(
        writer: Writer, ris: Ris, worker_for: Any) -> None:
    def job(uow: UnitOfWork) -> int:
        text = message("C1").replace("ORC|SC|", "ORC|SC|東京")
        return uow.outbox.enqueue("ris", "ORD1", "C1", "ORM^O01", text)
    await writer.run(job)
    await worker_for(to(ris, charset="8859/1"))
    await until(lambda: state(writer, "C1") == "dead")
    assert entry(writer, "C1")["last_error"].startswith("not sent to ris: ")
    assert sent(ris) == []


async def test_stop_returns_while_the_destination_refuses_connections(writer: Writer) -> None:
    """A lane cancelled as its connection attempt is refused stops (Python 3.11's
    ``asyncio.wait_for`` turned that cancel into the refusal, and the lane retried for ever)."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    for n in range(4):
        await enqueue(writer, f"C{n}", order_key=f"ORD{n}")
    moments = random.Random(14)
    for _ in range(40):  # stopped at a different moment of the lane's loop each time
        worker = OutboxWorker(outbox_reader(writer.path), writer,
                              [Destination("ris", "127.0.0.1", port, timeout=2.0)],
                              backoff_base=0.0, backoff_max=0.0, poll=0.01)
        await worker.start()
        await asyncio.sleep(moments.uniform(0.0, 0.02))
        await stop(worker)
    assert entry(writer, "C0")["state"] == "pending"


async def test_what_the_ris_acknowledged_before_a_stop_is_recorded_as_delivered(
        writer: Writer, ris: Ris) -> None:
    """A stop in the middle of a batch records the outcomes of the messages already sent:
    none of them is sent again by the next worker."""
    for n in range(300):
        await enqueue(writer, f"C{n:03d}", order_key=f"ORD{n}")
    moments = random.Random(17)
    for _ in range(5):
        worker = OutboxWorker(outbox_reader(writer.path), writer, [to(ris)],
                              backoff_base=0.05, backoff_max=0.2, poll=0.05)
        await worker.start()
        got = len(ris.received)
        await until(lambda got=got: len(ris.received) > got
                    or state(writer, "C299") == "delivered")
        await asyncio.sleep(moments.uniform(0.0, 0.005))
        await stop(worker)
        for control_id in sent(ris):
            assert state(writer, control_id) == "delivered", control_id
    assert len(sent(ris)) == len(set(sent(ris)))  # none twice


async def test_a_silent_ris_holds_a_stop_up_for_the_shutdown_grace_only(
        writer: Writer, ris: Ris) -> None:
    ris.mode = "silent"
    await enqueue(writer, "C1")
    worker = OutboxWorker(outbox_reader(writer.path), writer, [to(ris, timeout=30.0)],
                          poll=0.05, shutdown_grace=0.2)
    await worker.start()
    await until(lambda: len(ris.received) == 1)
    await stop(worker)  # within 10 s, not the 30 s of the destination's timeout
    assert entry(writer, "C1")["state"] == "pending"
    assert entry(writer, "C1")["attempts"] == 0  # its answer never came: sent again later


async def test_a_stop_returns_when_recording_an_outcome_fails_meanwhile(
        writer: Writer, ris: Ris, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store error (or a lost lane) while a stop records what was answered ends the lane
    as the stop asked; it is not taken for a failed batch to try again."""
    for n in range(300):
        await enqueue(writer, f"C{n:03d}", order_key=f"ORD{n}")
    worker = OutboxWorker(outbox_reader(writer.path), writer, [to(ris)], poll=0.05,
                          shutdown_grace=0.2)

    async def failing(*args: Any) -> None:
        raise StoreError("the store writer is not running")
    monkeypatch.setattr(worker, "_settle", failing)
    await worker.start()
    await until(lambda: len(ris.received) >= 3)
    ris.mode = "silent"  # the lane now waits for an answer, with answered ones to record
    sent_so_far = len(ris.received)
    await until(lambda: len(ris.received) > sent_so_far)
    await stop(worker)  # within 10 s
    assert all(t.done() for t in worker._tasks) and not worker._tasks
