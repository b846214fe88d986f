"""A modality polling with the same query gets kept responses, and still sees every change:
DCMTK findscu asks the same query before and after an ADT^A08 rename, an order update and
an MPPS start; each answer is the store's, as a broker that keeps nothing would give."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from broker.app import Broker
from tests.integration.completion.test_stgcmt_ian import in_progress, perform
from tests.support.broker import make_settings, running
from tests.support.dicom_peers import dump_to_dicom, findscu
from tests.support.mllp import msa, send
from tests.support.samples import order

pytestmark = pytest.mark.peers
QUERY = ("(0008,0005) CS [ISO_IR 192]\n(0010,0010) PN []\n(0010,0020) LO []\n"
         "(0008,0050) SH []\n(0032,1060) LO []\n(0040,0100) SQ\n(fffe,e000) -\n"
         "(0040,0001) AE []\n(0040,0002) DA []\n(0040,0003) TM []\n(0040,0007) LO []\n"
         "(0040,0009) SH []\n(0040,0020) CS []\n"
         "(fffe,e00d) -\n(fffe,e0dd) -\n")


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    settings = make_settings(tmp_path)
    settings.admin.enabled = False
    settings.dicom.show_all_statuses = True  # a started step stays in the answers
    async with running(settings) as b:
        yield b


async def ask(broker: Broker, tmp: Path) -> list[Dataset]:
    query = tmp / "query.dcm"
    if not query.exists():
        dump_to_dicom("", query, QUERY)
    answers, _ = await asyncio.to_thread(findscu, broker.dicom.bound_port, "MWLBROKER", query,
                                         tmp / "rsp")
    return sorted(answers, key=lambda a: str(a.AccessionNumber))


async def post(broker: Broker, *messages: str) -> None:
    acks = await send(broker.mllp.bound_port, *(m.encode() for m in messages))
    assert [msa(a)[1] for a in acks] == ["AA"] * len(messages)


async def test_the_same_query_sees_every_change(broker: Broker, tmp_path: Path) -> None:
    await post(broker, order(1, patient_id="PK").text(), order(2).text())
    first = await ask(broker, tmp_path)
    assert [str(a.PatientName) for a in first] == ["PATIENT^NUMBER1", "PATIENT^NUMBER2"]
    assert len(broker.dicom.matching.responses) == 2, "both kept after the first query"
    again = await ask(broker, tmp_path)
    assert again == first
    assert len(broker.dicom.matching.responses) == 2, "the same two answered again"

    await post(broker, "MSH|^~\\&|RIS|HOSP|MWLBROKER|RAD|20261122100000||ADT^A08|A08-K|P|"
               "2.5.1\rPID|||PK^^^HOSP||RENAMED^ANNA||19800202|F\r")
    renamed = await ask(broker, tmp_path)
    assert str(renamed[0].PatientName) == "RENAMED^ANNA"
    assert renamed[1] == first[1], "the other order is unchanged"

    await post(broker, order(2, order_control="XO", start="202611221130",
                             control_id="XO-2").text())
    revised = await ask(broker, tmp_path)
    assert revised[1].ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime \
        == "1130"
    assert first[1].ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime \
        == "1000"

    await asyncio.to_thread(perform, broker.dicom.bound_port, in_progress(1), None)
    started = await ask(broker, tmp_path)
    sps = started[0].ScheduledProcedureStepSequence[0]
    assert sps.ScheduledProcedureStepStatus == "STARTED"
    assert str(started[0].PatientName) == "RENAMED^ANNA"
