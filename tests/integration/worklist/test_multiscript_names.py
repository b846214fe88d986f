"""Names in several scripts and literal backslashes, end to end: HL7 over MLLP to the real
``mwl-broker serve``, answered by C-FIND (pynetdicom SCU) in each per-AE character set."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from pydicom.dataset import Dataset

from broker.dicom.client import WorklistClient, build_query, query_keys
from tests.support.broker import BrokerProcess
from tests.support.db import Db
from tests.support.mllp import err, msa, send
from tests.support.samples import order

CHINESE = "WANG^XIAOMING~\u738b^\u5c0f\u660e"  # two repetitions, no XPN-8
BOTH_GROUPS = "WANG^XIAOMING=\u738b^\u5c0f\u660e"
ORDERS = {
    "MSG00000001": CHINESE,
    "MSG00000002": "O\\E\\BRIEN^PAT",  # an HL7-escaped literal backslash
    "MSG00000003": "DOE^JANE~SMITH^JANE",  # two alphabetic names: the second is left out
}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerProcess, list[str]]]:
    folder = tmp_path_factory.mktemp("names")
    proc = BrokerProcess(folder, (
        "dicom.calling_aes=[{ae_title: LATIN, charset: ISO_IR 100},"
        " {ae_title: CHINA, charset: GB18030}]",))
    proc.start()
    try:
        payloads = [order(n, control_id=cid, patient_name=name, charset="UNICODE UTF-8",
                          station="CT01").encode()
                    for n, (cid, name) in enumerate(ORDERS.items(), start=1)]
        acks = asyncio.run(send(proc.port, *payloads))
        yield proc, acks
    finally:
        proc.stop()


def find(proc: BrokerProcess, name: str, calling: str = "MWLQUERY") -> list[Dataset]:
    query = build_query(query_keys([f"PatientName={name}"]))
    query.SpecificCharacterSet = "ISO_IR 192"
    with WorklistClient("127.0.0.1", proc.dicom_port, calling=calling) as client:
        result = client.find(query)
    assert result.status == 0x0000, result.comment
    return result.matches


def test_untyped_repetitions_reach_the_modality_as_two_groups(
        broker: tuple[BrokerProcess, list[str]]) -> None:
    proc, acks = broker
    assert msa(acks[0])[1] == "AA" and err(acks[0]) == [""]  # nothing left out: no warning
    (match,) = find(proc, "WANG*")
    assert match.SpecificCharacterSet == "ISO_IR 192"
    assert str(match.PatientName) == BOTH_GROUPS


def test_pn_matching_finds_the_name_by_either_group(
        broker: tuple[BrokerProcess, list[str]]) -> None:
    proc, _ = broker
    for query in ("WANG^XIAOMING", "\u738b*", "\u738b^\u5c0f\u660e", "=\u738b^\u5c0f\u660e"):
        matches = find(proc, query)
        assert [str(m.PatientName) for m in matches] == [BOTH_GROUPS], query


def test_per_ae_character_sets_keep_the_groups_they_can_hold(
        broker: tuple[BrokerProcess, list[str]]) -> None:
    proc, _ = broker
    (latin,) = find(proc, "WANG*", "LATIN")
    assert latin.SpecificCharacterSet == "ISO_IR 100"
    assert str(latin.PatientName) == "WANG^XIAOMING"
    (china,) = find(proc, "WANG*", "CHINA")
    assert china.SpecificCharacterSet == "GB18030"
    assert str(china.PatientName) == BOTH_GROUPS


def test_a_literal_backslash_stays_one_value(broker: tuple[BrokerProcess, list[str]]) -> None:
    proc, acks = broker
    (match,) = find(proc, "O*")
    assert match["PatientName"].VM == 1
    assert str(match.PatientName) == "O/BRIEN^PAT"
    assert msa(acks[1])[1] == "AA"
    warning = err(acks[1])
    assert warning[4] == "W" and "replaced by '/'" in warning[8]


def test_a_name_left_out_is_answered_and_stored_with_the_message(
        broker: tuple[BrokerProcess, list[str]]) -> None:
    proc, acks = broker
    assert msa(acks[2])[1] == "AA"
    assert err(acks[2])[4] == "W"
    ((outcome, error, ack),) = Db(proc.db).query(
        "SELECT outcome, error, ack FROM message_log WHERE control_id = 'MSG00000003'")
    assert outcome == "AA"
    assert "PatientName: repetition 2 left out" in error and "SMITH" not in error
    assert "|W|" in ack
    (match,) = find(proc, "DOE*")
    assert str(match.PatientName) == "DOE^JANE"
