"""The audit trail against a real audit record repository: rsyslogd (imtcp plain and over
TLS with client certificates through the ossl driver, imudp) writing what it receives to a
file. Every received message is parsed back and validated against the shipped schema; an
outage of the repository loses nothing."""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker.audit import events as ev
from broker.audit.trail import AuditTrail, open_trail
from broker.config import AuditSettings, DatabaseSettings, TlsSettings
from tests.support.audit import Rsyslog, parse_syslog, validate
from tests.support.certs import Pki, make_pki

pytestmark = pytest.mark.peers


def wait(predicate: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def rsyslog(tmp_path: Path, pki: Pki) -> Iterator[Rsyslog]:
    r = Rsyslog(tmp_path / "rsyslog", pki)
    r.start()
    try:
        yield r
    finally:
        r.stop()


def trail(tmp_path: Path, port: int, transport: str, pki: Pki | None = None) -> AuditTrail:
    tls = TlsSettings(ca_file=str(pki.ca), cert_file=str(pki.client.cert),
                      key_file=str(pki.client.key)) if pki else TlsSettings()
    settings = AuditSettings(enabled=True, host="127.0.0.1", port=port, transport=transport,
                             tls=tls, timeout=5.0, backoff_base=0.1, backoff_max=0.5,
                             spool_directory=str(tmp_path / "spool"),
                             enterprise_site_id="RADIOLOGY")
    return open_trail(settings, "mwl-test", "MWLBROKER",
                      DatabaseSettings(path=str(tmp_path / "broker.sqlite")))


def every_event(t: AuditTrail) -> None:
    """One of each message the broker sends."""
    ris = ev.remote("RIS|HOSP", "127.0.0.1:40000", True)
    patient = ev.PatientRef("P1^^^HOSP", "MÜLLER^ZOË")
    t.application_start()
    t.user_authentication("admin", "127.0.0.1", False, detail="sign-in: not the admin token")
    t.user_authentication("admin", "127.0.0.1", True)
    t.query("CT01", "127.0.0.1:50000", bytes.fromhex("08005000020000002a00"),
            "1.2.840.10008.5.1.4.31", "1.2.840.10008.1.2")
    t.patient_record(ev.UPDATE, patient, ris)
    t.order_record(ev.CREATE, patient, ev.OrderRef("A1", "PL1", "FL1", "NW"), ris)
    t.procedure_record(ev.CREATE, patient, (ev.StudyRef("1.2.3", ("A1",)),), "1.2.4",
                       "IN PROGRESS", ev.remote("CT01", "127.0.0.1:50000", True))
    t.security_alert("calling_ae_not_allowed", "127.0.0.1:50001", "INTRUDER",
                     listener="dicom", user="INTRUDER")
    t.application_stop()


EVENT_IDS = ["110100", "110114", "110114", "110112", "110110", "110109", "110111", "110113",
             "110100"]


def received_ids(r: Rsyslog) -> list[str]:
    out = []
    for m in r.messages():
        doc = validate(parse_syslog(m["raw"].encode("utf-8")).xml)
        out.append(doc.find("EventIdentification/EventID").get("csd-code"))
    return out


@pytest.mark.parametrize("transport", ["tcp", "tls", "udp"])
def test_every_message_reaches_rsyslog_and_validates(
        tmp_path: Path, rsyslog: Rsyslog, pki: Pki, transport: str) -> None:
    port = {"tcp": rsyslog.tcp_port, "tls": rsyslog.tls_port, "udp": rsyslog.udp_port}
    t = trail(tmp_path, port[transport], transport, pki if transport == "tls" else None)
    t.start()
    try:
        every_event(t)
        wait(lambda: len(rsyslog.messages()) == len(EVENT_IDS))
    finally:
        t.stop()
    assert received_ids(rsyslog) == EVENT_IDS
    for m in rsyslog.messages():  # rsyslog's own reading of the RFC 5424 header
        assert (m["version"], m["msgid"], m["app"], m["procid"]) == (
            "1", "IHE+RFC-3881", "mwl-broker", str(os.getpid()))
        assert m["pri"] in ("85", "84")
    query = validate(parse_syslog(rsyslog.messages()[3]["raw"].encode()).xml)
    assert base64.b64decode(query.findtext(
        "ParticipantObjectIdentification/ParticipantObjectQuery")) == bytes.fromhex(
        "08005000020000002a00")
    patient = validate(parse_syslog(rsyslog.messages()[4]["raw"].encode()).xml)
    assert patient.findtext(
        "ParticipantObjectIdentification/ParticipantObjectName") == "MÜLLER^ZOË"
    assert not list((tmp_path / "spool").glob("*.msg"))


def test_a_repository_outage_loses_nothing(
        tmp_path: Path, rsyslog: Rsyslog, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    """Over TLS: messages sent before the outage arrive; those recorded while rsyslog is
    stopped wait in the spool (on disk), and arrive once it is back, in order. Delivery is
    at least once: a batch whose sending failed half way is sent again whole, so a message
    may arrive twice (never here, where the outage starts between batches); none is lost."""
    caplog.set_level(logging.INFO, logger="broker.audit")
    t = trail(tmp_path, rsyslog.tls_port, "tls", pki)
    t.start()
    try:
        for n in range(5):
            t.user_authentication(f"before{n}", "127.0.0.1", True)
        wait(lambda: len(rsyslog.messages()) == 5)
        rsyslog.stop()
        for n in range(10):
            t.user_authentication(f"during{n}", "127.0.0.1", True)
        wait(lambda: any(r.msg == "audit_repository_down" for r in caplog.records))
        assert t.spool.count == 10
        assert len(list((tmp_path / "spool").glob("*.msg"))) == 10
        rsyslog.start()
        for n in range(5):
            t.user_authentication(f"after{n}", "127.0.0.1", True)
        wait(lambda: len(set(users(rsyslog))) == 20)
        wait(lambda: t.spool.count == 0)
    finally:
        t.stop()
    got = users(rsyslog)
    expected = ([f"before{n}" for n in range(5)] + [f"during{n}" for n in range(10)]
                + [f"after{n}" for n in range(5)])
    assert set(got) == set(expected)
    assert list(dict.fromkeys(got)) == expected  # first arrivals in the order recorded
    assert any(r.msg == "audit_repository_up" for r in caplog.records)


def test_messages_spooled_when_the_broker_stopped_are_sent_after_it_restarts(
        tmp_path: Path, rsyslog: Rsyslog, pki: Pki) -> None:
    rsyslog.stop()
    first = trail(tmp_path, rsyslog.tls_port, "tls", pki)
    first.start()
    first.application_start()
    first.user_authentication("while-down", "127.0.0.1", True)
    first.application_stop()
    first.stop(grace=0.5)
    assert len(list((tmp_path / "spool").glob("*.msg"))) == 3
    rsyslog.start()
    second = trail(tmp_path, rsyslog.tls_port, "tls", pki)
    second.start()
    try:
        second.application_start()
        wait(lambda: len(rsyslog.messages()) == 4)
    finally:
        second.stop()
    assert received_ids(rsyslog) == ["110100", "110114", "110100", "110100"]


def users(r: Rsyslog) -> list[str]:
    out = []
    for m in r.messages():
        doc = validate(parse_syslog(m["raw"].encode("utf-8")).xml)
        out.append(doc.find("ActiveParticipant").get("UserID"))
    return out


def test_a_repository_whose_certificate_is_not_trusted_gets_nothing(
        tmp_path: Path, rsyslog: Rsyslog, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="broker.audit")
    settings = AuditSettings(enabled=True, port=rsyslog.tls_port, transport="tls",
                             tls=TlsSettings(ca_file=str(pki.other_ca),
                                             cert_file=str(pki.client.cert),
                                             key_file=str(pki.client.key)),
                             timeout=5.0, backoff_base=0.1, backoff_max=0.5,
                             spool_directory=str(tmp_path / "spool"))
    t = open_trail(settings, "mwl-test", "MWLBROKER", DatabaseSettings())
    t.start()
    try:
        t.application_start()
        wait(lambda: any(r.msg == "audit_repository_down" for r in caplog.records))
    finally:
        t.stop(grace=0.2)
    down = next(r for r in caplog.records if r.msg == "audit_repository_down")
    assert "certificate refused" in down.__dict__["fields"]["error"]
    assert rsyslog.messages() == []
    assert len(list((tmp_path / "spool").glob("*.msg"))) == 1
