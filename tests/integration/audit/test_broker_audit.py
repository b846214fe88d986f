"""The real broker with its audit trail on, sending to a real rsyslogd: its start, a refused
association, console sign-ins, an accepted HL7 order and its stop each reach the repository
as a valid DICOM audit message."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from lxml import etree
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from broker.app import Broker
from broker.config import AuditSettings
from tests.support.audit import Rsyslog, parse_syslog, validate
from tests.support.broker import make_settings
from tests.support.certs import make_pki
from tests.support.mllp import msa, send
from tests.support.mpps import UID, perform
from tests.support.samples import order
from tests.support.waiting import until

pytestmark = pytest.mark.peers
TOKEN = "audit-admin-token"


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    r = Rsyslog(tmp_path / "rsyslog", make_pki(tmp_path / "pki"))
    r.start()
    try:
        yield r
    finally:
        r.stop()


def echo(port: int, calling: str) -> bool:
    """Whether an association from ``calling`` is accepted (blocking)."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title="MWLBROKER")
    established = bool(assoc.is_established)
    if established:
        assoc.release()
    return established


def find(port: int, calling: str) -> int:
    """A worklist C-FIND by PatientID from ``calling``; its final status (blocking)."""
    from pydicom.dataset import Dataset
    from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore

    ae = AE(ae_title=calling)
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title="MWLBROKER")
    assert assoc.is_established
    ds = Dataset()
    ds.PatientID = "P0000001"
    ds.PatientName = None
    statuses = [s.Status for s, _ in assoc.send_c_find(ds, ModalityWorklistInformationFind)]
    assoc.release()
    return int(statuses[-1])


def received(r: Rsyslog) -> list[etree._Element]:
    return [validate(parse_syslog(m["raw"].encode("utf-8")).xml) for m in r.messages()]


def kind(doc: etree._Element) -> str:
    ident = doc.find("EventIdentification")
    assert ident is not None
    types = [t.get("originalText") for t in ident.findall("EventTypeCode")]
    return "/".join([ident.find("EventID").get("originalText"), *types])


def has(r: Rsyslog, what: str) -> bool:
    return any(kind(doc) == what for doc in received(r))


async def test_the_broker_audits_its_life_refusals_sign_ins_and_records(
        tmp_path: Path, rsyslog: Rsyslog) -> None:
    settings = make_settings(tmp_path, idle_timeout=5.0, shutdown_grace=2.0)
    settings.audit = AuditSettings(enabled=True, host="127.0.0.1", port=rsyslog.tcp_port,
                                   transport="tcp", timeout=5.0, backoff_base=0.1,
                                   backoff_max=0.5, audit_source_id="MWL-AUDIT-TEST")
    settings.dicom.allowed_calling_aes = ["CT01"]
    settings.admin.token = TOKEN
    broker = Broker(settings)
    await broker.start()
    try:
        await until(lambda: has(rsyslog, "Application Activity/Application Start"), 20)
        assert await asyncio.to_thread(echo, broker.dicom.bound_port, "CT01")
        assert not await asyncio.to_thread(echo, broker.dicom.bound_port, "INTRUDER")
        url = f"http://127.0.0.1:{broker.admin.bound_port}" if broker.admin else ""
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                         timeout=aiohttp.ClientTimeout(total=15)) as http:
            async with http.get(url + "/api/outbox",
                                headers={"Authorization": "Bearer wrong"}) as answer:
                assert answer.status == 401
            async with http.post(url + "/login", data={"token": TOKEN, "next": "/"},
                                 allow_redirects=False) as answer:
                assert answer.status == 303
            async with http.post(url + "/logout", allow_redirects=False) as answer:
                assert answer.status == 303
        (ack,) = await send(broker.mllp.bound_port, order(1).encode())
        assert msa(ack)[1] == "AA"
        assert await asyncio.to_thread(find, broker.dicom.bound_port, "CT01") == 0
        mpps_uid = await asyncio.to_thread(perform, broker, "COMPLETED")
        await until(lambda: has(rsyslog, "Security Alert/Node Authentication")
                    and has(rsyslog, "Query")
                    and has(rsyslog, "Order Record")
                    and sum(kind(d) == "Procedure Record" for d in received(rsyslog)) == 2
                    and sum(kind(d) == "User Authentication/Login"
                            for d in received(rsyslog)) == 2
                    and has(rsyslog, "User Authentication/Logout"), 20)
    finally:
        await broker.stop()
    await until(lambda: has(rsyslog, "Application Activity/Application Stop"), 20)
    docs = received(rsyslog)
    assert kind(docs[0]) == "Application Activity/Application Start"
    assert kind(docs[-1]) == "Application Activity/Application Stop"
    assert {d.find("AuditSourceIdentification").get("AuditSourceID") for d in docs} == {
        "MWL-AUDIT-TEST"}

    (alert,) = [d for d in docs if kind(d) == "Security Alert/Node Authentication"]
    assert alert.find("EventIdentification").get("EventOutcomeIndicator") == "4"
    performer = alert.findall("ActiveParticipant")[1]
    assert (performer.get("UserID"), performer.get("NetworkAccessPointID")) == ("INTRUDER",
                                                                                "127.0.0.1")
    detail = alert.find("ParticipantObjectIdentification/ParticipantObjectDetail")
    assert base64.b64decode(detail.get("value")).decode() == (
        "dicom: calling AE title not allowed: INTRUDER (dicom.allowed_calling_aes)")

    logins = [d for d in docs if kind(d) == "User Authentication/Login"]
    assert [d.find("EventIdentification").get("EventOutcomeIndicator") for d in logins] == [
        "4", "0"]  # the wrong bearer token, then the console sign-in

    (record,) = [d for d in docs if kind(d) == "Order Record"]
    assert record.find("EventIdentification").get("EventActionCode") == "C"
    patient, job = record.findall("ParticipantObjectIdentification")
    assert patient.get("ParticipantObjectID") == f"{order(1).patient_id}^^^{order(1).issuer}"
    assert job.get("ParticipantObjectID") == order(1).accession
    sender = record.find("ActiveParticipant")
    assert sender.get("UserID") == "RIS|HOSP" and sender.get("NetworkAccessPointID") == (
        "127.0.0.1")

    created, completed = [d for d in docs if kind(d) == "Procedure Record"]
    assert [d.find("EventIdentification").get("EventActionCode")
            for d in (created, completed)] == ["C", "U"]
    study, patient = completed.findall("ParticipantObjectIdentification")
    assert study.get("ParticipantObjectID") == UID
    assert study.find("ParticipantObjectDescription/MPPS").get("UID") == mpps_uid
    sop_class = study.find("ParticipantObjectDescription/SOPClass")
    assert (sop_class.get("UID"), sop_class.get("NumberOfInstances")) == (
        "1.2.840.10008.5.1.4.1.1.2", "1")
    assert patient.findtext("ParticipantObjectName") == "PATIENT^NUMBER1"
    assert completed.find("ActiveParticipant").get("UserID") == "CT01"
    (query,) = [d for d in docs if kind(d) == "Query"]
    caller = query.find("ActiveParticipant")
    assert (caller.get("UserID"), caller.get("UserIsRequestor")) == ("CT01", "true")
    sop = query.find("ParticipantObjectIdentification")
    assert sop.get("ParticipantObjectID") == "1.2.840.10008.5.1.4.31"
    asked = base64.b64decode(sop.findtext("ParticipantObjectQuery") or "")
    assert b"P0000001" in asked
    assert not list((tmp_path / "audit-spool").glob("*.msg"))  # the default spool, emptied
