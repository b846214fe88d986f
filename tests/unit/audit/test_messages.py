"""broker.audit.events and message: every audit message the broker sends validates against
the shipped PS3.15 A.5.1 schema and carries the codes of PS3.15 A.5.3 / PS3.16."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from lxml import etree

from broker.audit import codes as c
from broker.audit import events as ev
from broker.audit.message import AuditEvent, AuditSource, clean, to_xml
from tests.support.audit import schema, validate

WHEN = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=UTC)
LOCAL = ev.Local("mwl-1", "MWLBROKER", "broker.example.org", "mwl")
SOURCE = AuditSource("mwl-1", "RADIOLOGY")
RIS = ev.remote("RIS|HOSP", "10.1.2.3:40000", True)
#: a name with what XML cannot carry (a C0 control), markup and non-ASCII letters
PATIENT = ev.PatientRef("P1^^^HOSP", "Müller^Zoë\x1b<&>", (("MSH-10", b"MSG1"),))
IDENTIFIER = bytes.fromhex("0800500000000000100010000000")

BUILDERS: dict[str, Callable[[], AuditEvent]] = {
    "application start": lambda: ev.application_activity(LOCAL, True, WHEN),
    "application stop": lambda: ev.application_activity(LOCAL, False, WHEN),
    "login": lambda: ev.user_authentication(LOCAL, "admin", "10.0.0.9:5555", c.SUCCESS,
                                            False, WHEN),
    "login refused": lambda: ev.user_authentication(LOCAL, "admin", "[::1]:5555",
                                                    c.MINOR_FAILURE, False, WHEN, "bearer"),
    "logout": lambda: ev.user_authentication(LOCAL, "admin", "10.0.0.9:5555", c.SUCCESS,
                                             True, WHEN),
    "query": lambda: ev.query(LOCAL, "CT01", "10.0.0.7:104", IDENTIFIER,
                              "1.2.840.10008.5.1.4.31", "1.2.840.10008.1.2", c.SUCCESS, WHEN),
    "patient record": lambda: ev.patient_record(LOCAL, ev.UPDATE, RIS, PATIENT, WHEN),
    "order record": lambda: ev.order_record(LOCAL, ev.CREATE, RIS, PATIENT,
                                            ev.OrderRef("A1", "PL1", "FL1", "NW"), WHEN),
    "order record without patient": lambda: ev.order_record(
        LOCAL, ev.DELETE, RIS, ev.PatientRef(""), ev.OrderRef("", "PL1", "", "CA"), WHEN),
    "procedure record": lambda: ev.procedure_record(
        LOCAL, ev.CREATE, ev.remote("CT01", "10.0.0.7:104", True), PATIENT,
        (ev.StudyRef("1.2.3.4", ("A1",), (("1.2.840.10008.5.1.4.1.1.2", 12),)),
         ev.StudyRef("1.2.3.5")), "1.2.3.6", "COMPLETED", WHEN),
    "security alert": lambda: ev.security_alert(LOCAL, c.NODE_AUTHENTICATION, "10.9.9.9:4444",
                                                "dicom: TLS handshake failed: unknown ca",
                                                WHEN, "CT99"),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_message_validates_against_the_schema(name: str) -> None:
    validate(to_xml(BUILDERS[name](), SOURCE))


def _doc(name: str) -> etree._Element:
    return validate(to_xml(BUILDERS[name](), SOURCE))


def _code(element: etree._Element) -> tuple[str, str, str]:
    return (element.get("csd-code"), element.get("codeSystemName"), element.get("originalText"))


@pytest.mark.parametrize(("name", "event_id", "action", "types"), [
    ("application start", ("110100", "DCM", "Application Activity"), "E",
     [("110120", "DCM", "Application Start")]),
    ("application stop", ("110100", "DCM", "Application Activity"), "E",
     [("110121", "DCM", "Application Stop")]),
    ("login", ("110114", "DCM", "User Authentication"), "E", [("110122", "DCM", "Login")]),
    ("logout", ("110114", "DCM", "User Authentication"), "E", [("110123", "DCM", "Logout")]),
    ("query", ("110112", "DCM", "Query"), "E", []),
    ("patient record", ("110110", "DCM", "Patient Record"), "U", []),
    ("order record", ("110109", "DCM", "Order Record"), "C", []),
    ("procedure record", ("110111", "DCM", "Procedure Record"), "C", []),
    ("security alert", ("110113", "DCM", "Security Alert"), "E",
     [("110126", "DCM", "Node Authentication")]),
])
def test_event_identification_codes(name: str, event_id: tuple[str, str, str], action: str,
                                    types: list[tuple[str, str, str]]) -> None:
    ident = _doc(name).find("EventIdentification")
    assert ident is not None
    assert _code(ident.find("EventID")) == event_id
    assert ident.get("EventActionCode") == action
    assert [_code(t) for t in ident.findall("EventTypeCode")] == types
    assert ident.get("EventDateTime") == "2026-05-04T03:02:01.123+00:00"


def test_source_and_the_broker_as_a_participant() -> None:
    doc = _doc("application start")
    source = doc.find("AuditSourceIdentification")
    assert source is not None
    assert (source.get("AuditSourceID"), source.get("AuditEnterpriseSiteID")) == (
        "mwl-1", "RADIOLOGY")
    assert source.find("AuditSourceTypeCode").get("csd-code") == "4"
    app, launcher = doc.findall("ActiveParticipant")
    assert (app.get("UserID"), app.get("AlternativeUserID"), app.get("UserIsRequestor"),
            app.get("NetworkAccessPointID"), app.get("NetworkAccessPointTypeCode")) == (
        "mwl-1", "AETITLES=MWLBROKER", "false", "broker.example.org", "1")
    assert _code(app.find("RoleIDCode")) == ("110150", "DCM", "Application")
    assert (launcher.get("UserID"), launcher.get("UserIsRequestor")) == ("mwl", "true")
    assert _code(launcher.find("RoleIDCode")) == ("110151", "DCM", "Application Launcher")
    assert doc.find("ParticipantObjectIdentification") is None


def test_login_refused_names_the_user_and_address_and_is_a_failure() -> None:
    doc = _doc("login refused")
    assert doc.find("EventIdentification").get("EventOutcomeIndicator") == "4"
    user = doc.findall("ActiveParticipant")[0]
    assert (user.get("UserID"), user.get("UserIsRequestor"), user.get("NetworkAccessPointID"),
            user.get("NetworkAccessPointTypeCode")) == ("admin", "true", "::1", "2")


def test_query_holds_the_identifier_and_its_transfer_syntax() -> None:
    doc = _doc("query")
    source, destination = doc.findall("ActiveParticipant")
    assert _code(source.find("RoleIDCode")) == ("110153", "DCM", "Source Role ID")
    assert (source.get("UserID"), source.get("AlternativeUserID"),
            source.get("NetworkAccessPointID")) == ("CT01", "AETITLES=CT01", "10.0.0.7")
    assert _code(destination.find("RoleIDCode")) == ("110152", "DCM", "Destination Role ID")
    (obj,) = doc.findall("ParticipantObjectIdentification")
    assert (obj.get("ParticipantObjectID"), obj.get("ParticipantObjectTypeCode"),
            obj.get("ParticipantObjectTypeCodeRole")) == ("1.2.840.10008.5.1.4.31", "2", "3")
    assert _code(obj.find("ParticipantObjectIDTypeCode")) == ("110181", "DCM", "SOP Class UID")
    assert base64.b64decode(obj.findtext("ParticipantObjectQuery")) == IDENTIFIER
    detail = obj.find("ParticipantObjectDetail")
    assert detail.get("type") == "TransferSyntax"
    assert base64.b64decode(detail.get("value")) == b"1.2.840.10008.1.2"


def test_patient_object_is_a_person_with_an_xml_safe_name() -> None:
    (obj,) = _doc("patient record").findall("ParticipantObjectIdentification")
    assert (obj.get("ParticipantObjectID"), obj.get("ParticipantObjectTypeCode"),
            obj.get("ParticipantObjectTypeCodeRole")) == ("P1^^^HOSP", "1", "1")
    assert _code(obj.find("ParticipantObjectIDTypeCode")) == ("2", "RFC-3881", "Patient Number")
    assert obj.findtext("ParticipantObjectName") == "Müller^Zoë\ufffd<&>"
    detail = obj.find("ParticipantObjectDetail")
    assert (detail.get("type"), base64.b64decode(detail.get("value"))) == ("MSH-10", b"MSG1")


def test_order_record_has_the_patient_and_the_order_numbers() -> None:
    patient, order = _doc("order record").findall("ParticipantObjectIdentification")
    assert patient.get("ParticipantObjectTypeCodeRole") == "1"
    assert (order.get("ParticipantObjectID"), order.get("ParticipantObjectTypeCodeRole")) == (
        "A1", "20")
    assert _code(order.find("ParticipantObjectIDTypeCode")) == ("121022", "DCM",
                                                               "Accession Number")
    details = {d.get("type"): base64.b64decode(d.get("value")).decode()
               for d in order.findall("ParticipantObjectDetail")}
    assert details == {"AccessionNumber": "A1", "PlacerOrderNumber": "PL1",
                       "FillerOrderNumber": "FL1", "OrderControl": "NW"}
    (alone,) = _doc("order record without patient").findall("ParticipantObjectIdentification")
    assert _code(alone.find("ParticipantObjectIDTypeCode"))[0] == "121020"


def test_procedure_record_has_each_study_with_its_mpps_then_the_patient() -> None:
    first, second, patient = _doc("procedure record").findall(
        "ParticipantObjectIdentification")
    assert _code(first.find("ParticipantObjectIDTypeCode")) == ("110180", "DCM",
                                                               "Study Instance UID")
    assert (first.get("ParticipantObjectID"), first.get("ParticipantObjectTypeCode"),
            first.get("ParticipantObjectTypeCodeRole")) == ("1.2.3.4", "2", "3")
    description = first.find("ParticipantObjectDescription")
    assert description.find("MPPS").get("UID") == "1.2.3.6"
    assert description.find("Accession").get("Number") == "A1"
    sop = description.find("SOPClass")
    assert (sop.get("UID"), sop.get("NumberOfInstances")) == ("1.2.840.10008.5.1.4.1.1.2", "12")
    assert second.find("ParticipantObjectDescription/SOPClass").get("NumberOfInstances") == "0"
    assert patient.get("ParticipantObjectTypeCodeRole") == "1"


def test_security_alert_names_the_peer_node_and_describes_the_alert() -> None:
    doc = _doc("security alert")
    assert doc.find("EventIdentification").get("EventOutcomeIndicator") == "4"
    assert doc.findtext("EventIdentification/EventOutcomeDescription").startswith("dicom: TLS")
    reporter, performer = doc.findall("ActiveParticipant")
    assert reporter.get("UserID") == "mwl-1"
    assert (performer.get("UserID"), performer.get("UserIsRequestor"),
            performer.get("NetworkAccessPointID")) == ("CT99", "false", "10.9.9.9")
    (subject,) = doc.findall("ParticipantObjectIdentification")
    assert subject.get("ParticipantObjectID") == "10.9.9.9"
    assert _code(subject.find("ParticipantObjectIDTypeCode")) == ("110182", "DCM", "Node ID")
    detail = subject.find("ParticipantObjectDetail")
    assert detail.get("type") == "Alert Description"
    assert base64.b64decode(detail.get("value")).startswith(b"dicom: TLS handshake failed")


def test_the_schema_is_strict() -> None:
    """It refuses what the standard does not allow (so the tests above mean something)."""
    good = to_xml(BUILDERS["query"](), SOURCE)
    for broken in (good.replace(b' EventOutcomeIndicator="0"', b' EventOutcomeIndicator="1"'),
                   good.replace(b'<EventID ', b'<EventTypeCode ', 1),
                   good.replace(b' UserIsRequestor="true"', b"", 1),
                   good.replace(b"ParticipantObjectQuery>", b"ParticipantObjectQueries>")):
        assert not schema().validate(etree.fromstring(broken))


def test_clean_replaces_only_what_xml_cannot_hold() -> None:
    kept = "a\tb\nc\rd\U0001F600"
    assert clean(kept) == kept
    assert clean("x\x00y\x1fz\ufffe") == "x\ufffdy\ufffdz\ufffd"
