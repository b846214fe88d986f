"""The worklist SCP end to end: orders sent over MLLP to the real ``mwl-broker serve``,
queried with DCMTK findscu and with the broker's own SCU (statuses, cancel, options)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from broker.dicom.client import QueryFailed, WorklistClient, build_query, query_keys
from tests.support.broker import BrokerProcess, mappings_with_orc18_station
from tests.support.dicom_peers import dump_to_dicom, findscu
from tests.support.mllp import msa, send
from tests.support.samples import order

pytestmark = pytest.mark.peers
DAY = "20261122"


def orders() -> list[bytes]:
    """Twelve orders on three stations and two days, one with a Chinese name."""
    out = []
    for n in range(12):
        station = ["CT01", "CT02", "MR01"][n % 3]
        modality = "MR" if station == "MR01" else "CT"
        day = DAY if n < 9 else "20261123"
        # PID-5 repetitions: alphabetic (XPN-8 A) and ideographic (I) → PN "A=I"
        name = ("WANG^XIAOMING^^^^^^A~\u738b^\u5c0f\u660e^^^^^^I" if n == 4
                else f"DOE^JOHN{n}")
        out.append(order(n, station=station, modality=modality, start=f"{day}{8 + n:02d}00",
                         patient_name=name, charset="UNICODE UTF-8").encode())
    return out


@pytest.fixture(scope="module")
def fed_broker(tmp_path_factory: pytest.TempPathFactory,
               dicom_fast_path: bool) -> Iterator[BrokerProcess]:
    folder = tmp_path_factory.mktemp("mwl")
    options = ("dicom.calling_aes=[{ae_title: CT01, station_key: true},"
               " {ae_title: LATIN, charset: ISO_IR 100}, {ae_title: CHINA, charset: GB18030}]",
               f"mappings.directory={mappings_with_orc18_station(folder)}")
    proc = BrokerProcess(folder, options)
    proc.start()
    try:
        acks = asyncio.run(send(proc.port, *orders()))
        assert all(msa(a)[1] == "AA" for a in acks)
        yield proc
    finally:
        proc.stop()


def dump_query(tmp: Path, station: str = "", date: str = "", name: str = "") -> Path:
    text = ("(0008,0005) CS [ISO_IR 192]\n"
            f"(0010,0010) PN [{name}]\n(0010,0020) LO []\n(0008,0050) SH []\n"
            "(0020,000d) UI []\n(0040,0100) SQ\n(fffe,e000) -\n"
            f"(0008,0060) CS []\n(0040,0001) AE [{station}]\n(0040,0002) DA [{date}]\n"
            "(0040,0003) TM []\n(0040,0009) SH []\n(0040,0020) CS []\n"
            "(fffe,e00d) -\n(fffe,e0dd) -\n")
    return dump_to_dicom("", tmp / "query.dcm", text)


def test_findscu_station_query(fed_broker: BrokerProcess, tmp_path: Path) -> None:
    answers, _ = findscu(fed_broker.dicom_port, "MWLBROKER",
                         dump_query(tmp_path, "CT01", DAY), tmp_path / "out")
    sps = [a.ScheduledProcedureStepSequence[0] for a in answers]
    assert sorted(s.ScheduledProcedureStepID for s in sps) == ["SPS0000000", "SPS0000003",
                                                               "SPS0000006"]
    assert all(s.ScheduledStationAETitle == "CT01" and s.Modality == "CT" for s in sps)
    assert all(s.ScheduledProcedureStepStartDate == DAY for s in sps)
    # exactly the requested keys, plus the character set
    assert sorted(e.keyword for e in answers[0]) == [
        "AccessionNumber", "PatientID", "PatientName", "ScheduledProcedureStepSequence",
        "SpecificCharacterSet", "StudyInstanceUID"]
    assert sorted(e.keyword for e in sps[0]) == [
        "Modality", "ScheduledProcedureStepID", "ScheduledProcedureStepStartDate",
        "ScheduledProcedureStepStartTime", "ScheduledProcedureStepStatus",
        "ScheduledStationAETitle"]


def test_findscu_name_wildcard_and_date_range(fed_broker: BrokerProcess,
                                              tmp_path: Path) -> None:
    answers, _ = findscu(fed_broker.dicom_port, "MWLBROKER",
                         dump_query(tmp_path, date="20261123-", name="doe^john1*"),
                         tmp_path / "out")
    assert sorted(str(a.PatientName) for a in answers) == ["DOE^JOHN10", "DOE^JOHN11"]


def test_findscu_unicode_name_in_utf8(fed_broker: BrokerProcess, tmp_path: Path) -> None:
    answers, _ = findscu(fed_broker.dicom_port, "MWLBROKER",
                         dump_query(tmp_path, name="\u738b*"), tmp_path / "out")
    assert len(answers) == 1
    assert answers[0].SpecificCharacterSet == "ISO_IR 192"
    assert str(answers[0].PatientName) == "WANG^XIAOMING=\u738b^\u5c0f\u660e"


def client(proc: BrokerProcess, calling: str = "MWLQUERY") -> WorklistClient:
    return WorklistClient("127.0.0.1", proc.dicom_port, calling=calling)


def test_character_set_per_calling_ae(fed_broker: BrokerProcess) -> None:
    q = build_query(query_keys(["PatientName=WANG*"]))
    with client(fed_broker, "LATIN") as c:
        latin = c.find(q)
    with client(fed_broker, "CHINA") as c:
        china = c.find(q)
    assert latin.matches[0].SpecificCharacterSet == "ISO_IR 100"
    assert str(latin.matches[0].PatientName) == "WANG^XIAOMING"  # the groups it can hold
    assert china.matches[0].SpecificCharacterSet == "GB18030"
    assert str(china.matches[0].PatientName) == "WANG^XIAOMING=\u738b^\u5c0f\u660e"


def test_calling_ae_as_station_key(fed_broker: BrokerProcess) -> None:
    with client(fed_broker, "CT01") as c:
        result = c.find(build_query(query_keys(date=DAY)))
    stations = {m.ScheduledProcedureStepSequence[0].ScheduledStationAETitle
                for m in result.matches}
    assert stations == {"CT01"} and len(result.matches) == 3


def test_unsupported_optional_key_gives_ff01(fed_broker: BrokerProcess) -> None:
    with client(fed_broker) as c:
        result = c.find(build_query(query_keys(["MedicalAlerts=NONE"], station="MR01")))
    assert result.status == 0x0000
    assert result.matches and result.warnings == len(result.matches)


def test_started_or_cancelled_steps_are_hidden_unless_asked(fed_broker: BrokerProcess
                                                            ) -> None:
    cancel = order(7, control_id="CANCEL-7", order_control="CA", order_status="CA")
    assert msa(asyncio.run(send(fed_broker.port, cancel.encode()))[0])[1] == "AA"
    with client(fed_broker) as c:
        default = c.find(build_query(query_keys(station="CT02")))
        asked = c.find(build_query(query_keys(
            ["ScheduledProcedureStepStatus=CANCELED"], station="CT02")))
    ids = {m.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID
           for m in default.matches}
    assert "SPS0000007" not in ids and ids
    assert [m.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus
            for m in asked.matches] == ["CANCELED"]


def test_two_sps_items_is_not_a_worklist_query(fed_broker: BrokerProcess) -> None:
    q = build_query(query_keys())
    q.ScheduledProcedureStepSequence.append(Dataset())
    with client(fed_broker) as c:
        result = c.find(q)
    assert result.status == 0xA900
    assert "more than one item" in result.comment


def test_invalid_date_range_is_refused_with_a_comment(fed_broker: BrokerProcess) -> None:
    with client(fed_broker) as c:
        result = c.find(build_query(query_keys(date="2026-11-22")))
    assert result.status == 0xC000
    assert "ScheduledProcedureStepStartDate" in result.comment


def test_wrong_called_ae_title_is_rejected(fed_broker: BrokerProcess) -> None:
    c = WorklistClient("127.0.0.1", fed_broker.dicom_port, called="NOTME")
    with pytest.raises(QueryFailed):
        c.open()


def test_echoscu(fed_broker: BrokerProcess) -> None:
    out = subprocess.run(["echoscu", "-aec", "MWLBROKER", "127.0.0.1",
                          str(fed_broker.dicom_port)], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_cancel_stops_the_search(tmp_path: Path) -> None:
    """2,000 items answered as fast as the SCP can: a C-CANCEL after the fifth stops it."""
    from benchmarks.mwl_query import populate
    from benchmarks.worklist_data import items

    proc = BrokerProcess(tmp_path)
    populate(proc.db, list(items(2000)))
    proc.start()
    try:
        with client(proc) as c:
            result = c.find(build_query(query_keys()), cancel_after=5)
        assert result.status == 0xFE00
        assert 5 <= len(result.matches) < 2000
    finally:
        proc.stop()


def test_concurrent_associations_get_every_match(fed_broker: BrokerProcess) -> None:
    """16 associations querying at once: no response lost, none refused (the fast path's
    hand-back of responses that pynetdicom's requestor reactor takes by mistake)."""
    import threading

    failures: list[str] = []
    counts: list[int] = []
    query = build_query(query_keys(station="CT01", date=DAY))

    def run(k: int) -> None:
        try:
            with client(fed_broker, f"LOAD{k:02d}") as c:
                for _ in range(15):
                    result = c.find(query)
                    counts.append(len(result.matches))
                    if result.status != 0 or len(result.matches) != 3:
                        failures.append(f"{k}: {result.status:#06x} {len(result.matches)}")
        except Exception as exc:
            failures.append(f"{k}: {exc!r}")

    threads = [threading.Thread(target=run, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures
    assert len(counts) == 16 * 15
