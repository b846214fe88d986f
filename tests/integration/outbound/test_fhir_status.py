"""FHIR status back (issue 17): an MPPS cycle of a stock pynetdicom modality against a real
broker tells a FHIR server (an aiohttp receiver on loopback that validates every resource
with the fhir.resources R4B models) of each step change as a Task — in order, always the
same Task — and, once the archive committed the images and reported them available, of
the study as an ImagingStudy; with a bearer token or OAuth2 client credentials; retried
while the server is down or answers 503, dead-lettered when it answers 400."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from broker.app import Broker
from broker.config import Settings
from tests.integration.completion.test_stgcmt_ian import (
    CT,
    SERIES,
    Archive,
    availability,
    completed,
    in_progress,
    instance_uids,
    notify,
    perform,
    study_of,
)
from tests.support.broker import free_port, make_settings
from tests.support.db import Db
from tests.support.fhir_server import FhirReceiver, fhir_receiver
from tests.support.mllp import msa, send
from tests.support.samples import order

TOKEN = "s3cret-token"


@pytest.fixture
async def receiver() -> AsyncIterator[FhirReceiver]:
    async with fhir_receiver(FhirReceiver(token=TOKEN)) as r:
        yield r


def fhir_settings(tmp_path: Path, receiver: FhirReceiver, **destination: Any) -> Settings:
    settings = make_settings(tmp_path)
    settings.admin.enabled = False
    settings.outbound.backoff_base = 0.1
    settings.outbound.backoff_max = 0.3
    settings.outbound.poll = 0.1
    f = settings.fhir.destination
    f.url, f.token, f.timeout = receiver.base_url, receiver.token, 5.0
    for key, value in destination.items():
        setattr(f, key, value)
    return settings


async def started(settings: Settings, *orders: int) -> Broker:
    broker = Broker(settings)
    await broker.start()
    acks = await send(broker.mllp.bound_port, *(order(n).encode() for n in orders or (1,)))
    assert [msa(a)[1] for a in acks] == ["AA"] * len(orders or (1,))
    return broker


async def link_service_request(broker: Broker, n: int, sr_id: str, patient_id: str) -> None:
    """The order came in over FHIR: its ServiceRequest row (as the intake stores it)."""
    sample = order(n)
    body = json.dumps({"resourceType": "ServiceRequest", "id": sr_id, "status": "active",
                       "intent": "order", "subject": {"reference": f"Patient/{patient_id}"}})

    def job(uow: Any) -> None:
        uow.fhir_links.conn.execute(
            "INSERT INTO fhir_resources (resource_type, id, identifier_system,"
            " identifier_value, study_uid, patient_id, issuer, status, body, updated_at)"
            " VALUES ('ServiceRequest', ?, 'urn:example:placer', ?, ?, ?, 'HOSP', 'active',"
            " ?, ?)", (sr_id, sample.placer, sample.study_uid, sample.patient_id, body,
                       uow.now))
    await broker.writer.run(job)


def fhir_rows(broker: Broker) -> list[tuple[Any, ...]]:
    return Db(broker.settings.database.path).query(
        "SELECT message_type, state, attempts, last_error FROM outbox"
        " WHERE destination = 'fhir' ORDER BY id")


async def until(predicate: Callable[[], object], seconds: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def cycle(broker: Broker, n: int = 1, final: Dataset | None = None,
                create_only: bool = False) -> str:
    """order(n)'s modality: N-CREATE IN PROGRESS, N-SET ``final`` (COMPLETED by default)."""
    last = None if create_only else final if final is not None else completed(instance_uids(n))
    return await asyncio.to_thread(perform, broker.dicom.bound_port, in_progress(n), last)


def statuses(receiver: FhirReceiver) -> list[str]:
    return [t["status"] for t in receiver.of("Task")]


async def test_a_fhir_order_gets_its_task_in_progress_then_completed(
        tmp_path: Path, receiver: FhirReceiver) -> None:
    broker = await started(fhir_settings(tmp_path, receiver))
    try:
        await link_service_request(broker, 1, "sr-1", "pat-1")
        await cycle(broker)
        await until(lambda: len(receiver.of("Task")) == 2)
        first, second = receiver.of("Task")
        assert statuses(receiver) == ["in-progress", "completed"]
        assert first["id"] == second["id"] and first["identifier"] == second["identifier"]
        assert first["identifier"] == [{"system": "urn:mwl-broker:scheduled-procedure-step",
                                        "value": f"{study_of(1)}/SPS0000001"}]
        assert [(m, p) for m, p, _ in receiver.requests] == [
            ("PUT", f"Task/{first['id']}")] * 2
        assert [s for _, _, s in receiver.requests] == [201, 200], "an update the second time"
        for task in (first, second):
            assert task["intent"] == "order"
            assert task["focus"] == {"reference": "ServiceRequest/sr-1"}
            assert task["basedOn"] == [{"reference": "ServiceRequest/sr-1"}]
            assert task["for"] == {"reference": "Patient/pat-1"}
            assert task["owner"]["identifier"]["value"] == "CT01"
            assert task["lastModified"]
        assert first["executionPeriod"]["start"].startswith("2026-11-22T10:15:00")
        assert "end" not in first["executionPeriod"]
        assert second["executionPeriod"]["end"].startswith("2026-11-22T10:30:00")
        assert receiver.invalid == []
        await until(lambda: {s for _, s, _, _ in fhir_rows(broker)} == {"delivered"})
        assert [t for t, *_ in fhir_rows(broker)] == ["FHIR Task", "FHIR Task"]
    finally:
        await broker.stop()


@pytest.mark.parametrize("all_orders", [False, True])
async def test_an_hl7_order_is_reported_only_with_all_orders(
        tmp_path: Path, receiver: FhirReceiver, all_orders: bool) -> None:
    broker = await started(fhir_settings(tmp_path, receiver, all_orders=all_orders))
    try:
        await cycle(broker)
        if not all_orders:
            await asyncio.sleep(0.5)
            assert fhir_rows(broker) == [] and receiver.received == []
            return
        await until(lambda: len(receiver.of("Task")) == 2)
        task = receiver.of("Task")[1]
        assert task["status"] == "completed"
        assert task["focus"]["type"] == "ServiceRequest"
        assert task["focus"]["identifier"] == {
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                 "code": "ACSN"}]}, "value": order(1).accession}
        assert task["for"]["identifier"] == {"value": order(1).patient_id,
                                             "assigner": {"display": "HOSP"}}
    finally:
        await broker.stop()


async def test_discontinued_is_a_failed_task_with_its_reason(
        tmp_path: Path, receiver: FhirReceiver) -> None:
    broker = await started(fhir_settings(tmp_path, receiver))
    try:
        await link_service_request(broker, 1, "sr-1", "pat-1")
        stop = completed(instance_uids(1))
        stop.PerformedProcedureStepStatus = "DISCONTINUED"
        await cycle(broker, final=stop)
        await until(lambda: len(receiver.of("Task")) == 2)
        assert statuses(receiver) == ["in-progress", "failed"]
        assert receiver.of("Task")[1]["statusReason"]["text"]
    finally:
        await broker.stop()


async def test_a_wrong_bearer_token_is_refused_for_good(tmp_path: Path,
                                                        receiver: FhirReceiver) -> None:
    broker = await started(fhir_settings(tmp_path, receiver, token="not-the-token"))
    try:
        await link_service_request(broker, 1, "sr-1", "pat-1")
        await cycle(broker, create_only=True)
        await until(lambda: fhir_rows(broker) and fhir_rows(broker)[0][1] == "dead")
        assert "FHIR server answered 401" in fhir_rows(broker)[0][3]
        assert "no valid bearer token" in fhir_rows(broker)[0][3]
        assert receiver.received == []
    finally:
        await broker.stop()


async def test_oauth2_token_is_fetched_once_reused_and_refreshed_after_a_401(
        tmp_path: Path) -> None:
    async with fhir_receiver(FhirReceiver(oauth2=("mwl broker", "pa:ss+word"))) as receiver:
        broker = await started(fhir_settings(
            tmp_path, receiver, token="", oauth2_token_url=receiver.token_url,
            client_id="mwl broker", client_secret="pa:ss+word", scope="system/Task.write"),
            1, 2)
        try:
            await link_service_request(broker, 1, "sr-1", "pat-1")
            await link_service_request(broker, 2, "sr-2", "pat-2")
            await cycle(broker, 1)
            await until(lambda: len(receiver.of("Task")) == 2)
            assert receiver.issued == ["access-1"], "one token for both requests"
            assert receiver.token_requests == [{"grant_type": "client_credentials",
                                                "scope": "system/Task.write"}]
            receiver.revoke_all()  # the server forgot it: the next request is answered 401
            await cycle(broker, 2)
            await until(lambda: len(receiver.of("Task")) == 4)
            assert receiver.issued == ["access-1", "access-2"]
            assert [s for _, _, s in receiver.requests] == [201, 200, 401, 201, 200]
            assert {t["focus"]["reference"] for t in receiver.of("Task")[2:]} == {
                "ServiceRequest/sr-2"}
        finally:
            await broker.stop()


async def test_503_is_retried_and_delivered_in_order(tmp_path: Path,
                                                     receiver: FhirReceiver) -> None:
    receiver.answers = [503, 503, 503]
    broker = await started(fhir_settings(tmp_path, receiver))
    try:
        await link_service_request(broker, 1, "sr-1", "pat-1")
        await cycle(broker)
        await until(lambda: len(receiver.of("Task")) == 2)
        assert statuses(receiver) == ["in-progress", "completed"]
        assert [s for _, _, s in receiver.requests] == [503, 503, 503, 201, 200]
        await until(lambda: {s for _, s, _, _ in fhir_rows(broker)} == {"delivered"})
        assert [a for _, _, a, _ in fhir_rows(broker)] == [4, 1]
    finally:
        await broker.stop()


async def test_server_down_then_up_gets_both_tasks_in_order(tmp_path: Path) -> None:
    receiver = FhirReceiver(port=free_port())
    broker = await started(fhir_settings(tmp_path, receiver))
    try:
        await link_service_request(broker, 1, "sr-1", "pat-1")
        await cycle(broker)
        await until(lambda: fhir_rows(broker) and fhir_rows(broker)[0][2] >= 2)
        assert [s for _, s, _, _ in fhir_rows(broker)] == ["pending", "pending"]
        assert "ConnectionRefusedError" in fhir_rows(broker)[0][3] \
            or "Connection refused" in fhir_rows(broker)[0][3]
        async with fhir_receiver(receiver):
            await until(lambda: len(receiver.of("Task")) == 2)
            assert statuses(receiver) == ["in-progress", "completed"]
    finally:
        await broker.stop()


async def test_400_with_an_operation_outcome_is_a_dead_letter(
        tmp_path: Path, receiver: FhirReceiver) -> None:
    receiver.reject = True
    broker = await started(fhir_settings(tmp_path, receiver))
    try:
        await link_service_request(broker, 1, "sr-1", "pat-1")
        await cycle(broker, create_only=True)
        await until(lambda: fhir_rows(broker) and fhir_rows(broker)[0][1] == "dead")
        kind, _, attempts, error = fhir_rows(broker)[0]
        assert (kind, attempts) == ("FHIR Task", 1)
        assert "answered 400" in error
        assert "error business-rule: Task rejected by test policy" in error
    finally:
        await broker.stop()


@pytest.mark.parametrize("retrieve", [False, True])
async def test_committed_and_available_study_is_an_imaging_study(
        tmp_path: Path, receiver: FhirReceiver, retrieve: bool) -> None:
    """With ``retrieve``: the archive's WADO-RS URL and its retrieve AE's address are set,
    and the ImagingStudy names them as contained Endpoints (the IAN's RetrieveAETitle)."""
    archive_port = free_port()
    where = {"wado_rs_url": "http://127.0.0.1:8042/dicom-web",
             "dimse_addresses": {"ARCHIVE": f"127.0.0.1:{archive_port}"}} if retrieve else {}
    settings = fhir_settings(tmp_path, receiver, **where)
    sc = settings.storage_commitment
    sc.ae_title, sc.host, sc.port = "ARCHIVE", "127.0.0.1", archive_port
    sc.same_association_wait, sc.timeout = 2.0, 5.0
    with Archive(archive_port):
        broker = await started(settings)  # no HL7 destination: the FHIR server alone
        try:
            await link_service_request(broker, 1, "sr-1", "pat-1")
            uids = instance_uids(1)
            mpps = await cycle(broker)
            await until(lambda: len(receiver.of("Task")) == 2)
            await asyncio.sleep(0.3)
            assert receiver.of("ImagingStudy") == [], "the rule also waits for availability"
            ds = availability(study_of(1), [(u, "ONLINE", "ARCHIVE") for u in uids], (mpps,))
            assert (await asyncio.to_thread(
                notify, broker.dicom.bound_port, ds)).Status == 0x0000
            await until(lambda: len(receiver.of("ImagingStudy")) == 1)
            study = receiver.of("ImagingStudy")[0]
            assert [t for t, _, _ in receiver.received] == ["Task", "Task", "ImagingStudy"]
            assert study["status"] == "available"
            assert study["identifier"] == [{"system": "urn:dicom:uid",
                                            "value": f"urn:oid:{study_of(1)}"}]
            assert study["subject"] == {"reference": "Patient/pat-1"}
            assert study["basedOn"] == [{"reference": "ServiceRequest/sr-1"}]
            assert (study["numberOfSeries"], study["numberOfInstances"]) == (1, 2)
            (series,) = study["series"]
            assert (series["uid"], series["modality"]["code"], series["numberOfInstances"]) \
                == (SERIES, "CT", 2)
            assert [(i["uid"], i["sopClass"]["code"]) for i in series["instance"]] == [
                (u, f"urn:oid:{CT}") for u in uids]
            assert receiver.invalid == []
            if not retrieve:  # neither a WADO-RS URL nor the AE's address: no endpoint
                assert "endpoint" not in study and "contained" not in study
                return
            wado, dimse = study["contained"]
            assert (wado["resourceType"], wado["connectionType"]["code"], wado["address"],
                    wado["name"]) == ("Endpoint", "dicom-wado-rs",
                                      "http://127.0.0.1:8042/dicom-web", "retrieve AE ARCHIVE")
            assert (dimse["connectionType"]["code"], dimse["name"], dimse["address"]) == (
                "dicom-dimse", "ARCHIVE", f"tcp://127.0.0.1:{archive_port}")
            refs = [{"reference": "#wado-rs"}, {"reference": "#dimse-1"}]
            assert study["endpoint"] == refs and series["endpoint"] == refs
        finally:
            await broker.stop()


async def test_a_ups_claim_and_complete_are_tasks_too(tmp_path: Path,
                                                      receiver: FhirReceiver) -> None:
    from pydicom.uid import generate_uid

    from tests.integration.worklist.test_ups_dimse import Scu, performed_procedure, today
    from tests.support.broker import mappings_with_orc18_station

    settings = fhir_settings(tmp_path, receiver)
    settings.mappings.directory = str(mappings_with_orc18_station(tmp_path))
    broker = Broker(settings)
    await broker.start()
    try:
        assert [msa(a)[1] for a in await send(broker.mllp.bound_port, order(
            1, station="CT01", start=f"{today()}0930").encode())] == ["AA"]
        await link_service_request(broker, 1, "sr-1", "pat-1")

        def perform_workitem() -> None:
            scu = Scu(broker.dicom.bound_port)
            try:
                (item,) = scu.find()
                uid, mine = str(item.SOPInstanceUID), generate_uid()
                assert scu.action(uid, 1, ProcedureStepState="IN PROGRESS",
                                  TransactionUID=mine)[0] == 0
                changes = performed_procedure()
                changes.TransactionUID = mine
                assert scu.set(uid, changes) == 0
                assert scu.action(uid, 1, ProcedureStepState="COMPLETED",
                                  TransactionUID=mine)[0] == 0
            finally:
                scu.close()
        await asyncio.to_thread(perform_workitem)
        await until(lambda: len(receiver.of("Task")) == 2)
        first, second = receiver.of("Task")
        assert statuses(receiver) == ["in-progress", "completed"]
        assert first["id"] == second["id"]
        assert second["focus"] == {"reference": "ServiceRequest/sr-1"}
        t = today()
        assert second["executionPeriod"]["start"].startswith(f"{t[:4]}-{t[4:6]}-{t[6:]}T09:30")
        assert second["executionPeriod"]["end"].startswith(f"{t[:4]}-{t[4:6]}-{t[6:]}T09:45")
        assert second["owner"]["identifier"]["value"] == "CT01"
        assert receiver.invalid == []
    finally:
        await broker.stop()
