"""FHIR R4 over the real ``mwl-broker serve`` (issue 17): a transaction Bundle posted with an
HTTP client is found by DCMTK findscu; an invalid Bundle is answered with an OperationOutcome
naming the element and changes nothing (neither on the worklist nor in the database); the
modality's MPPS cycle and the archive's storage commitment and IAN reach a FHIR receiver that
validates each Task and ImagingStudy with fhir.resources."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from tests.integration.completion.test_stgcmt_ian import (
    CT,
    SERIES,
    Archive,
    availability,
    completed,
    instance_uids,
    notify,
    perform,
)
from tests.support.broker import BrokerProcess, free_port
from tests.support.db import Db
from tests.support.dicom_peers import dump_to_dicom, findscu
from tests.support.fhir import FhirClient, order_bundle
from tests.support.fhir_server import FhirReceiver, fhir_receiver

pytestmark = pytest.mark.peers
TOKEN = "serve-fhir-token"
DAY = "20270301"
QUERY = ("(0008,0005) CS [ISO_IR 192]\n(0010,0010) PN []\n(0010,0020) LO []\n"
         "(0008,0050) SH []\n(0020,000d) UI []\n(0040,1001) SH []\n(0040,1003) SH []\n"
         "(0040,0100) SQ\n(fffe,e000) -\n(0008,0060) CS []\n(0040,0001) AE []\n"
         f"(0040,0002) DA [{DAY}]\n(0040,0003) TM []\n(0040,0009) SH []\n(0040,0020) CS []\n"
         "(fffe,e00d) -\n(fffe,e0dd) -\n")


@pytest.fixture
async def receiver() -> AsyncIterator[FhirReceiver]:
    async with fhir_receiver(FhirReceiver(token=TOKEN)) as r:
        yield r


def serve(tmp_path: Path, receiver: FhirReceiver, archive_port: int) -> BrokerProcess:
    """``mwl-broker serve`` telling ``receiver`` of each step, committing at the archive."""
    proc = BrokerProcess(tmp_path, (
        f"fhir.destination.url={receiver.base_url}", f"fhir.destination.token={TOKEN}",
        "fhir.destination.timeout=5", "outbound.poll=0.1", "outbound.backoff_base=0.1",
        "outbound.backoff_max=0.3", "storage_commitment.ae_title=ARCHIVE",
        "storage_commitment.host=127.0.0.1", f"storage_commitment.port={archive_port}",
        "storage_commitment.same_association_wait=2", "storage_commitment.timeout=5"))
    proc.start()
    return proc


async def worklist(proc: BrokerProcess, tmp: Path) -> list[Dataset]:
    """DCMTK findscu's answers for the day, through the served DICOM port."""
    query = dump_to_dicom("", tmp / "query.dcm", QUERY)
    answers, _ = await asyncio.to_thread(findscu, proc.dicom_port, "MWLBROKER", query,
                                         tmp / "rsp")
    return answers


def count(proc: BrokerProcess, sql: str) -> int:
    return int(Db(proc.db).query(sql)[0][0])


async def until(predicate: Callable[[], object], seconds: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def mpps_create(answer: Dataset) -> Dataset:
    """The modality's N-CREATE IN PROGRESS for the worklist item it was given."""
    sps = answer.ScheduledProcedureStepSequence[0]
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    item = Dataset()
    item.StudyInstanceUID = answer.StudyInstanceUID
    item.AccessionNumber = answer.AccessionNumber
    item.RequestedProcedureID = answer.RequestedProcedureID
    item.ScheduledProcedureStepID = sps.ScheduledProcedureStepID
    ds.ScheduledStepAttributesSequence = [item]
    ds.PatientName, ds.PatientID = answer.PatientName, answer.PatientID
    ds.PerformedProcedureStepID = "PPS-FHIR-1"
    ds.PerformedStationAETitle = "CT01"
    ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime = DAY, "093500"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "CT"
    ds.PerformedProcedureStepEndDate = ds.PerformedProcedureStepEndTime = None
    ds.PerformedSeriesSequence = []
    return ds


async def test_a_bundle_over_serve_is_found_by_findscu_and_reported_back_as_fhir(
        tmp_path: Path, receiver: FhirReceiver) -> None:
    archive_port = free_port()
    with Archive(archive_port):
        proc = serve(tmp_path, receiver, archive_port)
        client = FhirClient(proc.admin_port)
        try:
            answer = await client.post_bundle(order_bundle(pid="SRV1", accession="SACC1",
                                                           placer="SPLC1"))
            assert answer.body["type"] == "transaction-response"
            assert [e["response"]["status"][:3] for e in answer.body["entry"]] == ["201"] * 2
            sr_id = answer.body["entry"][1]["response"]["location"].split("/")[1]
            patient_id = answer.body["entry"][0]["response"]["location"].split("/")[1]

            (item,) = await worklist(proc, tmp_path)
            assert (str(item.PatientID), str(item.PatientName)) == ("SRV1", "FHIR^Jane")
            assert (item.AccessionNumber, item.RequestedProcedurePriority) == ("SACC1", "STAT")
            sps = item.ScheduledProcedureStepSequence[0]
            assert (sps.ScheduledStationAETitle, sps.Modality) == ("CT01", "CT")
            assert sps.ScheduledProcedureStepStatus == "SCHEDULED"

            uids = instance_uids(7)
            mpps = await asyncio.to_thread(perform, proc.dicom_port, mpps_create(item),
                                           completed(uids))
            await until(lambda: len(receiver.of("Task")) == 2)
            first, second = receiver.of("Task")
            assert [first["status"], second["status"]] == ["in-progress", "completed"]
            assert first["id"] == second["id"]
            for task in (first, second):
                assert task["focus"] == {"reference": f"ServiceRequest/{sr_id}"}
                assert task["for"] == {"reference": f"Patient/{patient_id}"}
            ds = availability(str(item.StudyInstanceUID),
                              [(u, "ONLINE", "ARCHIVE") for u in uids], (mpps,))
            assert (await asyncio.to_thread(notify, proc.dicom_port, ds)).Status == 0x0000
            await until(lambda: len(receiver.of("ImagingStudy")) == 1)
            (study,) = receiver.of("ImagingStudy")
            assert study["identifier"] == [{"system": "urn:dicom:uid",
                                            "value": f"urn:oid:{item.StudyInstanceUID}"}]
            assert study["basedOn"] == [{"reference": f"ServiceRequest/{sr_id}"}]
            assert (study["numberOfSeries"], study["numberOfInstances"]) == (1, 2)
            assert study["series"][0]["uid"] == SERIES
            assert [i["sopClass"]["code"] for i in study["series"][0]["instance"]] == [
                f"urn:oid:{CT}"] * 2
            assert receiver.invalid == [], "every resource validated by fhir.resources"
            assert [t for t, _, _ in receiver.received] == ["Task", "Task", "ImagingStudy"]
            await until(lambda: count(proc, "SELECT COUNT(*) FROM outbox WHERE destination ="
                                      " 'fhir' AND state <> 'delivered'") == 0)
        finally:
            await client.close()
            assert proc.stop() == 0
    assert "Traceback" not in proc.log_text()


async def test_an_invalid_bundle_over_serve_changes_nothing(tmp_path: Path,
                                                            receiver: FhirReceiver) -> None:
    proc = serve(tmp_path, receiver, free_port())
    client = FhirClient(proc.admin_port)
    try:
        await client.post_bundle(order_bundle(pid="SRV2", accession="SACC2", placer="SPLC2"))
        before = (count(proc, "SELECT COUNT(*) FROM fhir_resources"),
                  count(proc, "SELECT COUNT(*) FROM steps"))
        # a changed order for the same placer number (a new accession, hence a new step set)
        # whose Patient has a birth date that is not a date: nothing of it may be stored
        bad = order_bundle(pid="SRV2", accession="SACC2B", placer="SPLC2")
        bad["entry"][0]["resource"]["birthDate"] = "3 Feb 1970"
        answer = await client.post_bundle(copy.deepcopy(bad), expect=400)
        assert answer.body["resourceType"] == "OperationOutcome"
        issues = answer.body["issue"]
        assert any("birthDate" in e for i in issues for e in i.get("expression", [])), issues
        assert all(i["severity"] == "error" for i in issues)
        after = (count(proc, "SELECT COUNT(*) FROM fhir_resources"),
                 count(proc, "SELECT COUNT(*) FROM steps"))
        assert after == before
        (item,) = await worklist(proc, tmp_path)
        assert item.AccessionNumber == "SACC2", "the worklist still shows the valid order"
        unknown = await client.call("GET", "/ServiceRequest/does-not-exist", expect=404)
        assert unknown.body["resourceType"] == "OperationOutcome"
    finally:
        await client.close()
        assert proc.stop() == 0
    assert receiver.received == []
