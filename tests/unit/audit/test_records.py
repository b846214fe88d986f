"""broker.audit.records: the patient, order and procedure records of what the flows
committed, from HL7 domain events and MPPS datasets."""

from __future__ import annotations

from pydicom.datadict import keyword_dict

from broker.audit import events as ev
from broker.audit.message import AuditEvent, AuditSource, to_xml
from broker.audit.records import Remember, record_ingest, record_mpps
from broker.audit.syslog import Framing
from broker.audit.trail import AuditTrail, DisabledAuditTrail
from broker.model.orders import (
    OrderAction,
    OrderChange,
    Patient,
    PatientIdChange,
    PatientKey,
    PatientMerge,
    PatientUpdate,
    Procedure,
    StepStatus,
)
from tests.support.audit import validate


class Recording(AuditTrail):
    """A trail that keeps what it would spool."""

    def __init__(self) -> None:
        self.local = ev.Local("node-1", "MWLBROKER", "host", "mwl")
        self.source = AuditSource("node-1")
        self.framing = Framing()
        self.events: list[AuditEvent] = []

    def record(self, message: AuditEvent) -> None:
        validate(to_xml(message, self.source))
        self.events.append(message)


PATIENT = Patient(PatientKey("P1", "HOSP"), {"PatientName": "DOE^JANE"})
PROCEDURE = Procedure({"AccessionNumber": "A1", "PlacerOrderNumberImagingServiceRequest": "PL1",
                       "FillerOrderNumberImagingServiceRequest": "FL1",
                       "StudyInstanceUID": "1.2.3"})


def order(control: str, action: OrderAction = OrderAction.UPSERT,
          status: StepStatus = StepStatus.SCHEDULED, patient: Patient | None = PATIENT
          ) -> OrderChange:
    return OrderChange(patient, PROCEDURE, action, status, control)


def ingest(trail: AuditTrail | None, events: list, code: str = "AA",  # type: ignore[type-arg]
           duplicate: bool = False) -> None:
    record_ingest(trail, events, code, duplicate, control_id="MSG1", sender="RIS",
                  facility="HOSP", peer="10.1.2.3:40000")


def summary(e: AuditEvent) -> tuple[str, str, list[str]]:
    return e.event_id.meaning, e.action, [o.object_id for o in e.objects]


def test_orders_are_created_updated_or_withdrawn_by_their_control() -> None:
    trail = Recording()
    ingest(trail, [order("NW_SC"), order("XO"),
                   order("CA", OrderAction.STATUS, StepStatus.CANCELED),
                   order("DC", OrderAction.STATUS, StepStatus.DISCONTINUED),
                   order("SC", OrderAction.STATUS, StepStatus.STARTED, patient=None)])
    assert [summary(e) for e in trail.events] == [
        ("Order Record", "C", ["P1^^^HOSP", "A1"]), ("Order Record", "U", ["P1^^^HOSP", "A1"]),
        ("Order Record", "D", ["P1^^^HOSP", "A1"]), ("Order Record", "D", ["P1^^^HOSP", "A1"]),
        ("Order Record", "U", ["A1"])]
    first = trail.events[0]
    sender = first.participants[0]
    assert (sender.user_id, sender.requestor, sender.access_point) == ("RIS|HOSP", True,
                                                                       "10.1.2.3")
    assert first.objects[0].name == "DOE^JANE"
    assert first.objects[0].details == (("MSH-10", b"MSG1"),)
    assert dict(first.objects[1].details) == {
        "AccessionNumber": b"A1", "PlacerOrderNumber": b"PL1", "FillerOrderNumber": b"FL1",
        "OrderControl": b"NW", "OrderStatus": b"SC"}


def test_patient_events() -> None:
    trail = Recording()
    ingest(trail, [PatientUpdate(PATIENT),
                   PatientMerge(PATIENT, PatientKey("OLD", "HOSP")),
                   PatientIdChange(PATIENT, PatientKey("P0"))])
    assert [summary(e) for e in trail.events] == [
        ("Patient Record", "U", ["P1^^^HOSP"]), ("Patient Record", "U", ["P1^^^HOSP"]),
        ("Patient Record", "D", ["OLD^^^HOSP"]), ("Patient Record", "U", ["P1^^^HOSP"])]
    assert dict(trail.events[1].objects[0].details)["MergedPatientID"] == b"OLD^^^HOSP"
    assert dict(trail.events[3].objects[0].details)["PriorPatientID"] == b"P0"


def test_only_accepted_new_messages_are_audited() -> None:
    trail = Recording()
    ingest(trail, [order("NW")], code="AE")
    ingest(trail, [order("NW")], code="AR")
    ingest(trail, [order("NW")], duplicate=True)
    ingest(None, [order("NW")])
    ingest(DisabledAuditTrail(), [order("NW")])
    assert trail.events == []


def tag(keyword: str) -> str:
    return f"{keyword_dict[keyword]:08X}"


def text(vr: str, *values: object) -> dict[str, object]:
    return {"vr": vr, "Value": list(values)}


MPPS = {
    tag("PatientID"): text("LO", "P1"), tag("IssuerOfPatientID"): text("LO", "HOSP"),
    tag("PatientName"): text("PN", {"Alphabetic": "DOE^JANE"}),
    tag("PerformedProcedureStepStatus"): text("CS", "COMPLETED"),
    tag("PerformedStationAETitle"): text("AE", "CT01"),
    tag("ScheduledStepAttributesSequence"): text("SQ", {
        tag("StudyInstanceUID"): text("UI", "1.2.3"), tag("AccessionNumber"): text("SH", "A1")},
        {tag("StudyInstanceUID"): text("UI", "1.2.3"), tag("AccessionNumber"): text("SH", "A2")}),
    tag("PerformedSeriesSequence"): text("SQ", {tag("ReferencedImageSequence"): text(
        "SQ", *[{tag("ReferencedSOPClassUID"): text("UI", "1.2.840.10008.5.1.4.1.1.2"),
                 tag("ReferencedSOPInstanceUID"): text("UI", f"1.9.{n}")} for n in range(3)])}),
}


def test_mpps_procedure_records() -> None:
    trail = Recording()
    record_mpps(trail, True, "1.2.9", MPPS, False, "CT01", "10.0.0.7:104")
    record_mpps(trail, False, "1.2.9", MPPS, False)
    record_mpps(trail, False, "1.2.9", MPPS, True)  # a replayed request changed nothing
    assert [summary(e) for e in trail.events] == [
        ("Procedure Record", "C", ["1.2.3", "P1^^^HOSP"]),
        ("Procedure Record", "U", ["1.2.3", "P1^^^HOSP"])]
    study, patient = trail.events[0].objects
    assert study.description is not None
    assert study.description.mpps == ("1.2.9",)
    assert study.description.accessions == ("A1", "A2")
    assert study.description.sop_classes == (("1.2.840.10008.5.1.4.1.1.2", 3),)
    assert study.details == (("PerformedProcedureStepStatus", b"COMPLETED"),)
    assert patient.name == "DOE^JANE"
    assert trail.events[0].participants[0].access_point == "10.0.0.7"
    assert trail.events[1].participants[0].user_id == "CT01"  # the performed station


def test_remember_keeps_the_merged_mpps() -> None:
    remember = Remember(lambda stored: ({**stored, "x": 1}, "COMPLETED", {}))
    assert remember({"a": 2}) == ({"a": 2, "x": 1}, "COMPLETED", {})
    assert remember.dataset == {"a": 2, "x": 1}
