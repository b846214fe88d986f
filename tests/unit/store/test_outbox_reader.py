"""The outbox lanes' reads: what is due, and when something next can be."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.store.sqlite.readers import outbox_reader
from broker.store.sqlite.writer import SqliteWriter as Writer
from broker.store.unit_of_work import UnitOfWork


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Writer]:
    w = Writer(tmp_path / "broker.sqlite")
    w.start()
    yield w
    w.stop()


async def test_a_later_message_of_a_backed_off_order_does_not_wake_the_lane(
        writer: Writer) -> None:
    """The first message of an order backs off; the second, queued due now, waits behind it.
    Nothing is due, and the lane's next wake-up is the first message's retry: not the second
    message's own time, which lies in the past and woke the lane over and over."""
    now = time.time()
    retry_at = now + 30.0

    def queue(uow: UnitOfWork) -> None:
        uow.outbox.enqueue("ris", "ORDER-1", "C1", "ORM^O01", "first", due_at=retry_at)
        uow.outbox.enqueue("ris", "ORDER-1", "C2", "ORM^O01", "second", due_at=now - 1.0)
        uow.outbox.enqueue("ris", "ORDER-2", "C3", "ORM^O01", "other", due_at=now + 60.0)
    await writer.run(queue)
    reader = await outbox_reader(writer.path)()
    try:
        assert await reader.due(now, destination="ris") == []
        assert await reader.next_due_at("ris") == pytest.approx(retry_at, abs=0.001)
        assert await reader.next_due_at(None, others=("ris",)) is None
        rows = await reader.due(retry_at + 0.1, destination="ris")
        assert [r.control_id for r in rows] == ["C1"]
    finally:
        await reader.close()
