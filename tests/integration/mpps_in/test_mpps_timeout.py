"""MPPS requests whose store job times out: a defined failure status with an Error Comment,
and the same request sent again answered as done (its first job committed late).

The store is the broker's real writer, held busy by a job that waits on a gate; the broker
waits dicom.mpps_store_timeout (here 0.3 s) for an MPPS job."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from pynetdicom.association import Association

from broker.app import Broker
from broker.config import DestinationSettings
from broker.store.unit_of_work import UnitOfWork
from tests.support.broker import free_port, make_settings
from tests.support.db import Db
from tests.support.mllp import msa, send
from tests.support.mpps import completion, create, mpps, step_status, update
from tests.support.samples import order


@pytest.fixture
async def ordered(tmp_path: Path) -> AsyncIterator[Broker]:
    settings = make_settings(tmp_path)
    settings.dicom.mpps_store_timeout = 0.3
    # a RIS that is not there: status messages stay in the outbox, where they are counted
    settings.outbound.destinations = [DestinationSettings("ris", "127.0.0.1", free_port(), 1.0)]
    broker = Broker(settings)
    await broker.start()
    try:
        acks = await send(broker.mllp.bound_port, order(1).encode())
        assert [msa(a)[1] for a in acks] == ["AA"]
        yield broker
    finally:
        await broker.stop()


@contextmanager
def busy_store(broker: Broker) -> Iterator[None]:
    """The writer runs a job that waits until the block ends; on leaving, every job queued
    meanwhile has committed."""
    gate, entered = threading.Event(), threading.Event()

    def hold(uow: UnitOfWork) -> None:
        entered.set()
        gate.wait(60)

    holder = threading.Thread(target=broker.writer.run_sync, args=(hold,))
    holder.start()
    assert entered.wait(10)
    try:
        yield
    finally:
        gate.set()
        holder.join(60)
        broker.writer.run_sync(lambda uow: None, timeout=60)  # behind the late jobs


def counts(broker: Broker) -> tuple[int, int]:
    db = Db(broker.settings.database.path)
    return (db.query("SELECT COUNT(*) FROM mpps")[0][0],
            db.query("SELECT COUNT(*) FROM outbox")[0][0])


async def test_n_create_timeout_is_0110_and_the_resend_is_done(
        ordered: Broker, scu: Association, caplog: pytest.LogCaptureFixture) -> None:
    uid = generate_uid()
    caplog.set_level(logging.WARNING, logger="broker.dicom")
    with busy_store(ordered):
        status = await asyncio.to_thread(create, scu, mpps(), uid)
    assert status.Status == 0x0110
    assert "store busy" in status.ErrorComment
    logged = [r.__dict__["fields"] for r in caplog.records if r.msg == "mpps_store_timeout"]
    assert logged == [{"sop_instance_uid": uid, "operation": "N-CREATE", "timeout": 0.3}]
    created, queued = counts(ordered)  # the first job committed late
    assert created == 1 and queued >= 1
    assert step_status(ordered) == ["STARTED"]

    assert (await asyncio.to_thread(create, scu, mpps(), uid)).Status == 0x0000
    assert counts(ordered) == (created, queued)  # nothing applied twice
    other = await asyncio.to_thread(create, scu, mpps(PerformedProcedureStepID="PPS9"), uid)
    assert other.Status == 0x0111


async def test_n_set_timeout_is_0110_and_the_resend_is_done(
        ordered: Broker, scu: Association) -> None:
    uid = generate_uid()
    assert (await asyncio.to_thread(create, scu, mpps(), uid)).Status == 0x0000
    with busy_store(ordered):
        status = await asyncio.to_thread(update, scu, uid, completion())
    assert status.Status == 0x0110
    assert "store busy" in status.ErrorComment
    assert step_status(ordered) == ["COMPLETED"]  # the first job committed late
    before = counts(ordered)

    assert (await asyncio.to_thread(update, scu, uid, completion())).Status == 0x0000
    assert counts(ordered) == before
    # a different N-SET on the final instance is refused as before
    refused = await asyncio.to_thread(update, scu, uid, completion("DISCONTINUED"))
    assert refused.Status == 0x0110 and refused.ErrorID == 0xA710
    assert step_status(ordered) == ["COMPLETED"]
