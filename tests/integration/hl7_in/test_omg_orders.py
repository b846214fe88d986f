"""OMG^O19 general clinical orders (IHE Eye Care, IHE RAD v2.5.1 option) end to end: the
shipped sample sent to the real ``mwl-broker serve``, then updated (XO) and cancelled (CA)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from broker.dicom.client import WorklistClient, build_query, query_keys
from tests.support.broker import BrokerProcess
from tests.support.mllp import msa, send

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = (ROOT / "testdata" / "hl7" / "OMG^O19-GeneralOrder.hl7").read_text("ascii")


def variant(control_id: str, orc: str, start: str = "202611241030") -> bytes:
    """The sample with another MSH-10, ORC-1/ORC-5 and TQ1-7 start."""
    text = SAMPLE.replace("|OMG0000001|", f"|{control_id}|")
    text = text.replace("ORC|NW|", f"ORC|{orc.split('_')[0]}|")
    text = text.replace("||SC||", f"||{orc.split('_')[1]}||") if "_" in orc else text.replace(
        "||SC||", "||||")
    return text.replace("|202611241030|", f"|{start}|").encode("ascii")


@pytest.fixture(scope="module")
def proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    broker = BrokerProcess(tmp_path_factory.mktemp("omg"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def find(proc: BrokerProcess, *extra: str) -> list[Dataset]:
    query = build_query(query_keys(["AccessionNumber=EACC0001", *extra]))
    with WorklistClient("127.0.0.1", proc.dicom_port) as client:
        result = client.find(query)
    assert result.status == 0x0000, result.comment
    return result.matches


def test_new_order_is_accepted_and_scheduled(proc: BrokerProcess) -> None:
    (ack,) = asyncio.run(send(proc.port, SAMPLE.encode("ascii")))
    segments = [s.split("|") for s in ack.split("\r") if s]
    msh, msa_fields = segments[0], segments[1]
    # original-mode accept: ACK, trigger event O19, structure ACK (as for OMI^O23 → ACK^O23)
    assert msh[8] == "ACK^O19^ACK" and msh[11] == "2.5.1"
    assert msa_fields[:3] == ["MSA", "AA", "OMG0000001"]
    assert [s[0] for s in segments] == ["MSH", "MSA"]
    (match,) = find(proc)
    sps = match.ScheduledProcedureStepSequence[0]
    assert str(match.PatientName) == "GARCIA^MARIA"
    assert match.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.90001"
    assert match.RequestedProcedureID == "ERP0001"
    assert (sps.Modality, sps.ScheduledProcedureStepID) == ("OPT", "ESPS0001")
    assert (sps.ScheduledProcedureStepStartDate, sps.ScheduledProcedureStepStartTime) == (
        "20261124", "1030")


def test_update_moves_the_step(proc: BrokerProcess) -> None:
    (ack,) = asyncio.run(send(proc.port, variant("OMG0000002", "XO_SC", "202611251400")))
    assert msa(ack)[1:3] == ["AA", "OMG0000002"]
    (match,) = find(proc)
    sps = match.ScheduledProcedureStepSequence[0]
    assert (sps.ScheduledProcedureStepStartDate, sps.ScheduledProcedureStepStartTime) == (
        "20261125", "1400")


def test_cancel_hides_the_step(proc: BrokerProcess) -> None:
    (ack,) = asyncio.run(send(proc.port, variant("OMG0000003", "CA")))
    assert msa(ack)[1:3] == ["AA", "OMG0000003"]
    assert find(proc) == []
    (cancelled,) = find(proc, "ScheduledProcedureStepStatus=CANCELED")
    assert cancelled.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus == "CANCELED"
