"""Acknowledged means durable: stop and restart the real broker, nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import signal

from tests.support.broker import SAMPLES, BrokerProcess
from tests.support.db import Db
from tests.support.mllp import msa, send
from tests.support.samples import order


def test_restart_keeps_everything_and_resend_is_not_applied_twice(
        broker_process: BrokerProcess) -> None:
    orders = [order(n).encode() for n in range(1, 41)]
    samples = [(SAMPLES / name).read_bytes() for name in
               ("ORM^O01.hl7", "OMI^O23-ImagingOrder.hl7", "ADT^A31-UpdatePersonInfo.hl7")]
    acks = asyncio.run(send(broker_process.port, *orders, *samples))
    assert [msa(a)[1] for a in acks] == ["AA"] * len(acks)

    db = Db(broker_process.db)
    counts = db.counts()
    snapshot = db.domain_snapshot()
    assert counts["procedures"] == 42 and counts["steps"] == 42

    assert broker_process.stop() == 0  # SIGTERM: graceful
    assert "broker_stopped" in broker_process.log_text()
    broker_process.start()
    assert db.domain_snapshot() == snapshot

    again = asyncio.run(send(broker_process.port, *orders, *samples))
    assert [msa(a)[1:3] for a in again] == [msa(a)[1:3] for a in acks]
    assert again == acks  # the stored acknowledgements, byte for byte
    assert db.counts() == counts
    assert db.domain_snapshot() == snapshot
    log = db.log()
    assert len(log) == 2 * len(acks)
    assert sum(1 for row in log if row[2] is not None) == len(acks)  # the resends: duplicates


def test_sigkill_after_ack_loses_nothing(broker_process: BrokerProcess) -> None:
    orders = [order(n).encode() for n in range(100, 130)]
    acks = asyncio.run(send(broker_process.port, *orders))
    assert all(msa(a)[1] == "AA" for a in acks)
    assert broker_process.proc is not None
    broker_process.proc.send_signal(signal.SIGKILL)
    broker_process.proc.wait()
    broker_process.proc = None
    db = Db(broker_process.db)
    assert db.counts()["steps"] == 30
    assert db.integrity() == []
    broker_process.start()
    assert db.counts()["steps"] == 30
