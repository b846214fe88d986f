"""Fault test: the RIS is down while 200 procedures are performed, the broker is restarted in
the middle, then the RIS comes back: every status message arrives exactly once, in order per
order."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from tests.support.broker import BrokerProcess, free_port
from tests.support.db import Db
from tests.support.mllp import msa, send
from tests.support.mpps import completion, mpps
from tests.support.ris import Ris, segment
from tests.support.samples import order

PROCEDURES = 200


def modality(port: int) -> Association:
    ae = AE(ae_title="CT01")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", port, ae_title="MWLBROKER")
    assert assoc.is_established
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return assoc


def perform(port: int, numbers: range) -> None:
    assoc = modality(port)
    try:
        for n in numbers:
            ds = mpps(study_uid=f"1.2.826.0.1.3680043.8.498.{n + 1}", sps_id=f"SPS{n:07d}",
                      accession=f"A{n:07d}")
            uid = generate_uid()
            status, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, uid)
            assert status.Status == 0, hex(status.Status)
            status, _ = assoc.send_n_set(completion(), ModalityPerformedProcedureStep, uid)
            assert status.Status == 0, hex(status.Status)
    finally:
        assoc.release()


def test_ris_down_and_broker_restarted(tmp_path: Path) -> None:
    ris_port = free_port()
    destination = (f"outbound.destinations=[{{name: ris, host: 127.0.0.1, port: {ris_port},"
                   " timeout: 2}]")
    proc = BrokerProcess(tmp_path, (destination, "outbound.backoff_base=0.1",
                                    "outbound.backoff_max=0.5", "outbound.poll=0.1"))
    proc.start()
    try:
        acks = asyncio.run(send(proc.port, *(order(n).encode() for n in range(PROCEDURES))))
        assert all(msa(a)[1] == "AA" for a in acks)
        perform(proc.dicom_port, range(PROCEDURES // 2))
        assert proc.stop() == 0  # restart with the RIS still down
        proc.start()
        perform(proc.dicom_port, range(PROCEDURES // 2, PROCEDURES))
        db = Db(proc.db)
        assert db.query("SELECT COUNT(*), SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END)"
                        " FROM outbox") == [
            (2 * PROCEDURES, 2 * PROCEDURES)]

        async def ris_comes_back() -> list[str]:
            ris = await Ris().start(ris_port)
            try:
                deadline = time.monotonic() + 90
                while db.query("SELECT COUNT(*) FROM outbox WHERE state = 'delivered'")[0][0] \
                        < 2 * PROCEDURES:
                    assert time.monotonic() < deadline, "not all delivered in time"
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.3)  # anything sent twice would arrive now
                return ris.received
            finally:
                await ris.stop()

        received = asyncio.run(ris_comes_back())
    finally:
        proc.stop()
    control_ids = [segment(m, "MSH")[10] for m in received]
    assert len(control_ids) == 2 * PROCEDURES == len(set(control_ids))  # exactly once
    by_order: dict[str, list[str]] = {}
    for message in received:
        by_order.setdefault(segment(message, "ZDS")[1], []).append(segment(message, "ORC")[5])
    assert len(by_order) == PROCEDURES
    assert all(statuses == ["IP", "CM"] for statuses in by_order.values())
    assert db.query("SELECT COUNT(*) FROM outbox WHERE state != 'delivered'") == [(0,)]
