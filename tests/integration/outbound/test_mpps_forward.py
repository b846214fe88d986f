"""MPPS forwarding: every accepted N-CREATE and N-SET is copied to a downstream MPPS SCP (a
real pynetdicom SCP on loopback) through the outbox — in order per MPPS, retried while the SCP
is down, dead-lettered when it refuses, and nothing forwarded for a request the broker refused."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from broker.app import Broker
from broker.config import ForwardSettings
from tests.support.broker import free_port, make_settings
from tests.support.db import Db
from tests.support.mllp import msa, send
from tests.support.mpps import completion, mpps
from tests.support.samples import order
from tests.support.waiting import until


class DownstreamScp:
    """An MPPS SCP that records what it receives and answers ``status``."""

    def __init__(self, port: int, status: int = 0x0000) -> None:
        self.port, self.status = port, status
        self.received: list[tuple[str, str, Dataset]] = []
        self.lock = threading.Lock()
        self.server: Any = None

    def start(self) -> DownstreamScp:
        ae = AE(ae_title="PACS")
        ae.add_supported_context(ModalityPerformedProcedureStep)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[
            (evt.EVT_N_CREATE, self._create), (evt.EVT_N_SET, self._set)])
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def _create(self, ev: Any) -> tuple[int, None]:
        with self.lock:
            self.received.append(("N-CREATE", str(ev.request.AffectedSOPInstanceUID),
                                  ev.attribute_list))
        return self.status, None

    def _set(self, ev: Any) -> tuple[int, None]:
        with self.lock:
            self.received.append(("N-SET", str(ev.request.RequestedSOPInstanceUID),
                                  ev.modification_list))
        return self.status, None


@pytest.fixture
def downstream_port() -> int:
    return free_port()


@pytest.fixture
async def forwarding(tmp_path: Path, downstream_port: int) -> AsyncIterator[Broker]:
    settings = make_settings(tmp_path)
    settings.admin.enabled = False
    settings.dicom.mpps_forward = [ForwardSettings("pacs", "PACS", "127.0.0.1", downstream_port,
                                                   5.0)]
    settings.outbound.backoff_base = 0.1
    settings.outbound.backoff_max = 0.3
    settings.outbound.poll = 0.1
    b = Broker(settings)
    await b.start()
    assert msa((await send(b.mllp.bound_port, order(1).encode()))[0])[1] == "AA"
    try:
        yield b
    finally:
        await b.stop()


def modality(broker: Broker, uid: str, final: str | None = "COMPLETED") -> list[int]:
    ae = AE(ae_title="CT01")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", broker.dicom.bound_port, ae_title="MWLBROKER")
    statuses = [int(assoc.send_n_create(mpps(), ModalityPerformedProcedureStep, uid)[0].Status)]
    if final:
        statuses.append(int(assoc.send_n_set(completion(final), ModalityPerformedProcedureStep,
                                             uid)[0].Status))
    assoc.release()
    return statuses


def outbox(broker: Broker) -> list[tuple[Any, ...]]:
    return Db(broker.settings.database.path).query(
        "SELECT message_type, state, last_error FROM outbox ORDER BY id")


async def test_create_and_set_reach_the_downstream_scp_in_order(
        forwarding: Broker, downstream_port: int) -> None:
    scp = DownstreamScp(downstream_port).start()
    try:
        assert await asyncio.to_thread(modality, forwarding, "1.2.3.4.100") == [0, 0]
        await until(lambda: len(scp.received) == 2)
        (op1, uid1, created), (op2, uid2, changed) = scp.received
        assert (op1, uid1, op2, uid2) == ("N-CREATE", "1.2.3.4.100", "N-SET", "1.2.3.4.100")
        assert created.PerformedProcedureStepStatus == "IN PROGRESS"
        assert created.ScheduledStepAttributesSequence[0].AccessionNumber == "A0000001"
        assert created.PatientName == mpps().PatientName
        assert changed.PerformedProcedureStepStatus == "COMPLETED"
        assert changed.PerformedProcedureStepEndDate == "20261122"
        await until(lambda: {s for _, s, _ in outbox(forwarding)} == {"delivered"})
        assert [(t, s) for t, s, _ in outbox(forwarding)] == [
            ("MPPS N-CREATE", "delivered"), ("MPPS N-SET", "delivered")]
    finally:
        scp.stop()


async def test_downstream_down_then_up_gets_both_in_order(forwarding: Broker,
                                                          downstream_port: int) -> None:
    assert await asyncio.to_thread(modality, forwarding, "1.2.3.4.200") == [0, 0]
    await until(lambda: Db(forwarding.settings.database.path).query(
        "SELECT MAX(attempts) FROM outbox")[0][0] >= 2)
    assert {s for _, s, _ in outbox(forwarding)} == {"pending"}
    scp = DownstreamScp(downstream_port).start()
    try:
        await until(lambda: len(scp.received) == 2)
        assert [op for op, _, _ in scp.received] == ["N-CREATE", "N-SET"]
    finally:
        scp.stop()


async def test_a_refusing_downstream_scp_makes_dead_letters(forwarding: Broker,
                                                            downstream_port: int) -> None:
    scp = DownstreamScp(downstream_port, status=0x0110).start()
    try:
        assert await asyncio.to_thread(modality, forwarding, "1.2.3.4.300", None) == [0]
        await until(lambda: outbox(forwarding)[0][1] == "dead")
        assert "PACS refused the MPPS N-CREATE: status 0x0110" in outbox(forwarding)[0][2]
    finally:
        scp.stop()


async def test_a_refused_request_is_not_forwarded(forwarding: Broker) -> None:
    def bad() -> int:
        ae = AE(ae_title="CT01")
        ae.add_requested_context(ModalityPerformedProcedureStep)
        assoc = ae.associate("127.0.0.1", forwarding.dicom.bound_port, ae_title="MWLBROKER")
        status = int(assoc.send_n_create(mpps("COMPLETED"), ModalityPerformedProcedureStep,
                                         "1.2.3.4.400")[0].Status)
        assoc.release()
        return status

    assert await asyncio.to_thread(bad) == 0x0106
    assert outbox(forwarding) == []
