"""Closing the loop with every real piece running: ORM over MLLP → findscu finds the step →
the simulator sends MPPS IN PROGRESS → the RIS gets IP → the simulator stores images into
Orthanc and sends MPPS COMPLETED → the broker asks Orthanc to commit them → Orthanc reports on
a new association → an IAN arrives → the RIS gets the ORU^R01 with the right counts and UIDs.
Also: an instance missing from Orthanc gives a commitment failure and the failure notice;
restarts at each waiting point lose nothing and send nothing twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import InstanceAvailabilityNotification  # type: ignore[attr-defined]

from broker.app import Broker
from broker.cli.simulator import Endpoint, Plan, Result, ian_dataset, run
from broker.config import DestinationSettings, Settings
from tests.support.archive import OrthancArchive
from tests.support.broker import free_port, make_settings, mappings_with_orc18_station
from tests.support.db import Db
from tests.support.dicom_peers import findscu
from tests.support.mllp import msa, send
from tests.support.ris import Ris, obx, oru, segment
from tests.support.samples import order

pytestmark = pytest.mark.skipif(not OrthancArchive.available(),
                                reason="Orthanc is installed by make test")
STATION = "CT01"


@pytest.fixture
async def ris() -> AsyncIterator[Ris]:
    r = await Ris().start()
    yield r
    await r.stop()


@pytest.fixture
def dicom_port() -> int:
    return free_port()


@pytest.fixture
def archive(tmp_path: Path, dicom_port: int) -> Iterator[OrthancArchive]:
    with OrthancArchive(tmp_path / "orthanc", "MWLBROKER", dicom_port) as orthanc:
        yield orthanc


def completion_settings(tmp_path: Path, ris: Ris, archive: OrthancArchive, dicom_port: int,
                     **completion: object) -> Settings:
    settings = make_settings(tmp_path)
    settings.dicom.port = dicom_port
    settings.admin.enabled = False
    settings.mappings.directory = str(mappings_with_orc18_station(tmp_path))
    if completion:
        outbound = Path(settings.mappings.directory) / "outbound.yaml"
        text = outbound.read_text()
        for key, value in completion.items():
            old = next(line for line in text.splitlines() if line.startswith(f"    {key}:"))
            text = text.replace(old, f"    {key}: {value}", 1)
        outbound.write_text(text)
    settings.outbound.destinations = [DestinationSettings("ris", "127.0.0.1", ris.port, 2.0)]
    settings.outbound.backoff_base = 0.1
    settings.outbound.backoff_max = 0.5
    settings.outbound.poll = 0.1
    sc = settings.storage_commitment
    sc.ae_title, sc.host, sc.port = archive.ae_title, "127.0.0.1", archive.port
    sc.same_association_wait = 0.2
    sc.timeout = 10.0
    return settings


async def until(predicate, seconds: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def simulate(broker_port: int, archive: OrthancArchive, accession: str,
             not_stored: int = 0) -> Result:
    endpoint = Endpoint("127.0.0.1", broker_port, "MWLBROKER")
    plan = Plan(STATION, endpoint, endpoint, Endpoint("127.0.0.1", archive.port, "ORTHANC"),
                accession=accession, series=2, images=2, not_stored=not_stored)
    return run(plan, say=lambda _: None)


def ian(port: int, result: Result, availability: str = "ONLINE",
        only: int | None = None) -> int:
    """An archive's IAN for the stored instances (the first ``only`` of them)."""
    ds = ian_dataset(result.study_uid, result.mpps_uid, result.stored[:only], availability,
                     "ORTHANC")
    ae = AE(ae_title="ORTHANC")
    ae.add_requested_context(InstanceAvailabilityNotification)
    assoc = ae.associate("127.0.0.1", port, ae_title="MWLBROKER")
    assert assoc.is_established
    status, _ = assoc.send_n_create(ds, InstanceAvailabilityNotification, generate_uid())
    assoc.release()
    return int(status.Status)




def rows(broker: Broker, sql: str) -> list[tuple[object, ...]]:
    return Db(broker.settings.database.path).query(sql)


async def ordered(broker: Broker, n: int) -> str:
    sample = order(n, station=STATION)
    acks = await send(broker.mllp.bound_port, sample.encode())
    assert msa(acks[0])[1] == "AA"
    return sample.accession


async def test_the_whole_loop_with_orthanc(tmp_path: Path, ris: Ris, archive: OrthancArchive,
                                           dicom_port: int) -> None:
    broker = Broker(completion_settings(tmp_path, ris, archive, dicom_port))
    await broker.start()
    try:
        accession = await ordered(broker, 1)
        query = tmp_path / "q.dcm"
        from tests.support.dicom_peers import dump_to_dicom
        dump_to_dicom("", query, text=(
            "(0008,0050) SH []\n(0010,0010) PN []\n(0020,000d) UI []\n"
            "(0040,0100) SQ (Sequence with explicit length #=1)\n"
            "(fffe,e000) na (Item with explicit length #=2)\n"
            f"(0040,0001) AE [{STATION}]\n(0040,0009) SH []\n"
            "(fffe,e00d) na (ItemDelimitationItem for re-encoding)\n"
            "(fffe,e0dd) na (SequenceDelimitationItem for re-encoding)\n"))
        found, _ = await asyncio.to_thread(findscu, dicom_port, "MWLBROKER", query,
                                           tmp_path / "rsp")
        assert [str(ds.AccessionNumber) for ds in found] == [accession]

        result = await asyncio.to_thread(simulate, dicom_port, archive, accession)
        assert len(result.stored) == 4
        await until(lambda: any(r[0] == "committed" for r in rows(
            broker, "SELECT state FROM commitments")))
        held = await asyncio.to_thread(archive.instances)
        assert {i for _, _, i in result.stored} <= set(held)
        assert oru(ris) == [], "the rule also waits for availability"
        status_messages = [segment(m, "ORC")[5] for m in ris.received]
        assert status_messages == ["IP", "CM"]

        assert await asyncio.to_thread(ian, dicom_port, result) == 0
        await until(lambda: len(oru(ris)) == 1)
        notice = oru(ris)[0]
        sample = order(1, station=STATION)
        assert segment(notice, "MSH")[9] == "ORU^R01^ORU_R01"
        assert segment(notice, "MSH")[12] == "2.5.1"
        assert segment(notice, "PID")[3].split("^")[0] == sample.patient_id
        obr = segment(notice, "OBR")
        assert (obr[2], obr[3], obr[18], obr[25]) == (sample.placer, sample.filler, accession,
                                                      "F")
        values = obx(notice)
        assert values["113014"] == result.study_uid
        assert values["NumberOfSeries"] == "2" and values["NumberOfInstances"] == "4"
        assert values["InstancesCommitted"] == "4" and values["InstancesAvailable"] == "4"
        assert values["RetrieveAETitle"] == "ORTHANC"
        assert values["CompletionState"] == "complete" and values["PartialFlag"] == "N"
        per_instance = rows(broker, "SELECT state, COUNT(*) FROM commitment_instances"
                                    " GROUP BY state")
        assert per_instance == [("committed", 4)]
        assert rows(broker, "SELECT linked_by FROM ian") == [("mpps",)]
        await asyncio.sleep(0.5)
        assert len(oru(ris)) == 1, "sent once"
    finally:
        await broker.stop()


async def test_an_instance_missing_from_orthanc_sends_the_failure_notice(
        tmp_path: Path, ris: Ris, archive: OrthancArchive, dicom_port: int) -> None:
    broker = Broker(completion_settings(tmp_path, ris, archive, dicom_port))
    await broker.start()
    try:
        accession = await ordered(broker, 2)
        result = await asyncio.to_thread(simulate, dicom_port, archive, accession, 1)
        assert len(result.stored) == 3 and len(result.listed) == 1
        await until(lambda: len(oru(ris)) == 1)
        notice = oru(ris)[0]
        assert segment(notice, "OBR")[25] == "X"
        values = obx(notice)
        assert values["CompletionState"] == "commitment_failed"
        assert values["InstancesCommitted"] == "3"
        assert "0x0112" in segment(notice, "NTE")[3]
        failed = rows(broker, "SELECT sop_instance_uid, failure_reason FROM"
                              " commitment_instances WHERE state = 'failed'")
        assert failed == [(result.listed[0][2], 0x0112)]
        assert rows(broker, "SELECT state FROM completions") == [("commitment_failed",)]
    finally:
        await broker.stop()


async def test_timeout_sends_a_partial_notice(tmp_path: Path, ris: Ris,
                                              archive: OrthancArchive, dicom_port: int) -> None:
    broker = Broker(completion_settings(tmp_path, ris, archive, dicom_port, timeout=2))
    await broker.start()
    try:
        accession = await ordered(broker, 3)
        result = await asyncio.to_thread(simulate, dicom_port, archive, accession)
        assert await asyncio.to_thread(ian, dicom_port, result, "ONLINE", 1) == 0
        await until(lambda: len(oru(ris)) == 1)
        values = obx(oru(ris)[0])
        assert values["CompletionState"] == "partial" and values["PartialFlag"] == "Y"
        assert values["InstancesAvailable"] == "1"
        assert segment(oru(ris)[0], "OBR")[25] == "A"
        assert "3 of 4 instance(s) not reported available" in segment(oru(ris)[0], "NTE")[3]
    finally:
        await broker.stop()


async def test_report_problem_on_timeout_sends_nothing(tmp_path: Path, ris: Ris,
                                                       archive: OrthancArchive,
                                                       dicom_port: int) -> None:
    broker = Broker(completion_settings(tmp_path, ris, archive, dicom_port, timeout=1,
                                     on_timeout="report_problem"))
    await broker.start()
    try:
        accession = await ordered(broker, 4)
        await asyncio.to_thread(simulate, dicom_port, archive, accession)
        await until(lambda: rows(broker, "SELECT state FROM completions") == [("problem",)])
        assert oru(ris) == []
        detail = rows(broker, "SELECT detail FROM completions")[0][0]
        assert "not reported available" in str(detail)
    finally:
        await broker.stop()


@pytest.mark.parametrize("point", ["commitment_queued", "report_pending", "ian_partial"])
async def test_restart_at_each_waiting_point_loses_nothing_and_sends_once(
        tmp_path: Path, ris: Ris, archive: OrthancArchive, dicom_port: int, point: str) -> None:
    settings = completion_settings(tmp_path, ris, archive, dicom_port)
    if point == "commitment_queued":
        settings.storage_commitment.delay = 3.0  # the broker stops before it asks
    if point == "report_pending":  # Orthanc accepts the request but cannot report back
        archive.stop()
        archive.broker_port = free_port()
        archive.start()
    broker = Broker(settings)
    await broker.start()
    accession = await ordered(broker, 10)
    result = await asyncio.to_thread(simulate, dicom_port, archive, accession)
    if point == "report_pending":
        await until(lambda: rows(broker, "SELECT state FROM commitments") == [("requested",)])
    if point == "ian_partial":
        await until(lambda: rows(broker, "SELECT state FROM commitments") == [("committed",)])
        assert await asyncio.to_thread(ian, dicom_port, result, "ONLINE", 2) == 0
    await broker.stop()
    assert oru(ris) == []
    expected = {"commitment_queued": "queued", "report_pending": "requested",
                "ian_partial": "committed"}[point]
    assert rows(broker, "SELECT state FROM commitments") == [(expected,)]
    if point == "report_pending":
        archive.stop()
        archive.broker_port = dicom_port
        archive.start()
    broker = Broker(settings)
    await broker.start()
    try:
        await until(lambda: rows(broker, "SELECT state FROM commitments") == [("committed",)])
        if point == "ian_partial":
            assert await asyncio.to_thread(ian, dicom_port, result, "ONLINE", None) == 0
        else:
            assert await asyncio.to_thread(ian, dicom_port, result) == 0
        await until(lambda: len(oru(ris)) == 1)
        assert obx(oru(ris)[0])["CompletionState"] == "complete"
        await asyncio.sleep(1.0)
        assert len(oru(ris)) == 1
        assert rows(broker, "SELECT COUNT(*) FROM commitments") == [(1,)]
        states = dict(rows(broker, "SELECT message_type, COUNT(*) FROM outbox"
                                   " WHERE state = 'delivered' GROUP BY message_type"))
        assert states["ORU^R01^ORU_R01"] == 1 and states["ORM^O01"] == 2
        assert rows(broker, "SELECT COUNT(*) FROM outbox WHERE state != 'delivered'") == [(0,)]
    finally:
        await broker.stop()
