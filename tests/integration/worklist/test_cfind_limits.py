"""One C-FIND must not freeze the broker (issue #11), against the real ``mwl-broker serve``.

A Patient's Name made of alternating '*' and letters against a long stored name made the old
``.*`` regular expression backtrack for hours while holding the interpreter: HL7 went
unanswered. Now the worst query the caps accept is answered at once while HL7 is
acknowledged, and a query over the caps is C000 with an Error Comment naming the attribute."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from broker.dicom.client import FindResult, WorklistClient, build_query, query_keys
from tests.support.broker import BrokerProcess
from tests.support.mllp import msa, send
from tests.support.samples import order

FAMILY = "A" * 120
#: 16 wildcards (the default cap) that can never match: ~C(120, 15) ways for a regex to try
WORST_ACCEPTED = "*A" * 15 + "*X"


def long_named(n: int) -> bytes:
    return order(n, patient_name=f"{FAMILY}^{'B' * 60}").encode()


def name_query(value: str, **keys: str) -> Dataset:
    return build_query(query_keys([f"PatientName={value}"]
                                  + [f"{k}={v}" for k, v in keys.items()]))


def find(port: int, identifier: Dataset) -> FindResult:
    with WorklistClient("127.0.0.1", port, timeout=60) as client:
        return client.find(identifier)


async def test_worst_accepted_query_is_answered_while_hl7_is_acknowledged(
        broker_process: BrokerProcess) -> None:
    acks = await send(broker_process.port, long_named(1), long_named(2))
    assert [msa(a)[1] for a in acks] == ["AA", "AA"]
    answers: list[FindResult] = []
    query = threading.Thread(target=lambda: answers.append(
        find(broker_process.dicom_port, name_query(WORST_ACCEPTED))))
    query.start()
    sent = 0
    try:
        while sent < 3 or (query.is_alive() and sent < 20):
            sent += 1
            ack = (await send(broker_process.port, order(100 + sent).encode(), timeout=30))[0]
            assert msa(ack)[1] == "AA"
    finally:
        await asyncio.to_thread(query.join, 90)
    assert [(a.status, len(a.matches)) for a in answers] == [(0x0000, 0)]
    matching = find(broker_process.dicom_port, name_query("*A" * 14 + "*^B*"))
    assert (matching.status, len(matching.matches)) == (0x0000, 2)


@pytest.mark.parametrize("identifier,comment", [
    (name_query("*A" * 16 + "*X"), "PatientName: 17 wildcards (limit 16)"),
    (name_query("A" * 257), "PatientName: 257 characters (limit 256)"),
    (name_query("*", AccessionNumber="?" * 17), "AccessionNumber: 17 wildcards (limit 16)"),
    (name_query("*", ScheduledStationName="S" * 300),
     "ScheduledStationName: 300 characters (limit 256)"),
    (name_query("*", StudyInstanceUID="\\".join(f"1.2.826.0.1.3680043.8.498.{n}"
                                                  for n in range(1001))),
     "StudyInstanceUID: 1001 UIDs (limit 1000)"),
])
def test_values_over_the_caps_are_c000_with_a_comment(
        broker_process: BrokerProcess, identifier: Dataset, comment: str) -> None:
    answer = find(broker_process.dicom_port, identifier)
    assert (answer.status, answer.comment, answer.matches) == (0xC000, comment, [])
    log = broker_process.log_text()
    assert "mwl_query_refused" in log and "limit=" in log
    assert "A" * 40 not in log and "S" * 40 not in log and "?" * 17 not in log


def test_a_long_uid_list_is_within_the_caps(broker_process: BrokerProcess) -> None:
    """The length cap is per UID of a UID list (ten UIDs are 600 characters)."""
    uids = "\\".join(f"1.2.826.0.1.3680043.8.498.{n}" + ".1" * 16 for n in range(10))
    answer = find(broker_process.dicom_port, name_query("*", StudyInstanceUID=uids))
    assert answer.status == 0x0000


def test_caps_are_settings(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path, ("dicom.max_query_wildcards=2",
                                      "dicom.max_query_value_length=8",
                                      "dicom.max_query_uids=2"))
    broker.start()
    try:
        assert find(broker.dicom_port, name_query("*A*")).status == 0x0000
        assert find(broker.dicom_port, name_query("*A*B*")).comment == \
            "PatientName: 3 wildcards (limit 2)"
        assert find(broker.dicom_port, name_query("ABCDEFGHI")).comment == \
            "PatientName: 9 characters (limit 8)"
        assert find(broker.dicom_port, name_query("*", StudyInstanceUID="1.2\\1.3")).status == 0
        assert find(broker.dicom_port, name_query("*", StudyInstanceUID="1.2\\1.3\\1.4")
                    ).comment == "StudyInstanceUID: 3 UIDs (limit 2)"
    finally:
        broker.stop()
