"""MPPS fixtures: an in-process broker holding two orders, and a modality's association."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from broker.app import Broker
from tests.support.mllp import msa, send
from tests.support.samples import order


@pytest.fixture
async def ordered(broker: Broker) -> Broker:
    acks = await send(broker.mllp.bound_port, order(1).encode(), order(2).encode())
    assert [msa(a)[1] for a in acks] == ["AA", "AA"]
    return broker


@pytest.fixture
def scu(ordered: Broker) -> Iterator[Association]:
    ae = AE(ae_title="CT01")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", ordered.dicom.bound_port, ae_title="MWLBROKER")
    assert assoc.is_established
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    yield assoc
    assoc.release()
