"""The audit messages the broker sends, as PS3.15 A.5.3 defines them: who takes part, which
objects, which codes. Pure functions from what happened to an ``AuditEvent``."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime

from broker.audit import codes as c
from broker.audit.codes import Code
from broker.audit.message import AuditEvent, Description, Participant, ParticipantObject
from broker.net.allow import host_of

#: EventActionCode values of the record events
CREATE, READ, UPDATE, DELETE, EXECUTE = "C", "R", "U", "D", "E"
Details = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class Local:
    """This broker as a participant: its name in the logs (the node id), its AE title, its
    machine name, and the operating-system user that runs it."""

    user_id: str
    ae_title: str
    host: str
    launcher: str

    def participant(self, requestor: bool = False, roles: tuple[Code, ...] = ()) -> Participant:
        return Participant(self.user_id, requestor, f"AETITLES={self.ae_title}", "mwl-broker",
                           roles, self.host, c.MACHINE_NAME)


@dataclass(frozen=True, slots=True)
class PatientRef:
    """A patient: ID in HL7 CX form (``id^^^issuer``), name (DICOM PN) when known."""

    patient_id: str
    name: str = ""
    details: Details = ()


@dataclass(frozen=True, slots=True)
class OrderRef:
    """An order: accession number, placer and filler order numbers, order control (ORC-1)
    and order status (ORC-5)."""

    accession: str = ""
    placer: str = ""
    filler: str = ""
    control: str = ""
    status: str = ""


@dataclass(frozen=True, slots=True)
class StudyRef:
    """A study an MPPS covers, with its accession numbers and the instances it made."""

    uid: str
    accessions: tuple[str, ...] = ()
    sop_classes: tuple[tuple[str, int], ...] = ()


def remote(user_id: str, peer: str, requestor: bool, roles: tuple[Code, ...] = (),
           alternative: str = "") -> Participant:
    """A peer: ``user_id`` (its address when empty) at ``peer`` ('host:port')."""
    host = _host(peer)
    return Participant(user_id or host or "unknown", requestor, alternative, roles=roles,
                       access_point=host, access_point_type=_access_type(host))


def application_activity(local: Local, start: bool, when: datetime) -> AuditEvent:
    """A.5.3.1: the broker started or stopped, by the user that runs it."""
    return AuditEvent(c.APPLICATION_ACTIVITY, EXECUTE, c.SUCCESS, when, (
        local.participant(False, (c.APPLICATION,)),
        Participant(local.launcher, True, roles=(c.APPLICATION_LAUNCHER,))),
        types=(c.APPLICATION_START if start else c.APPLICATION_STOP,))


def user_authentication(local: Local, user: str, peer: str, outcome: str, logout: bool,
                        when: datetime, detail: str = "") -> AuditEvent:
    """A.5.3.12: a sign-in or sign-out at the admin console or API, from ``peer``."""
    return AuditEvent(c.USER_AUTHENTICATION, EXECUTE, outcome, when, (
        remote(user, peer, True), local.participant(False)),
        types=(c.LOGOUT if logout else c.LOGIN,), outcome_description=detail)


def query(local: Local, calling_ae: str, peer: str, identifier: bytes, sop_class: str,
          transfer_syntax: str, outcome: str, when: datetime) -> AuditEvent:
    """A.5.3.10: a C-FIND received; the object holds its identifier as sent."""
    return AuditEvent(c.QUERY, EXECUTE, outcome, when, (
        remote(calling_ae, peer, True, (c.SOURCE_ROLE,), f"AETITLES={calling_ae}"),
        local.participant(False, (c.DESTINATION_ROLE,))), (
        ParticipantObject(sop_class, c.SOP_CLASS_UID, c.SYSTEM_OBJECT, c.ROLE_REPORT,
                          query=identifier,
                          details=(("TransferSyntax", transfer_syntax.encode()),)),))


def patient_record(local: Local, action: str, sender: Participant, patient: PatientRef,
                   when: datetime, outcome: str = c.SUCCESS) -> AuditEvent:
    """A.5.3.14: a patient created, updated or deleted by ``sender`` (the RIS)."""
    return AuditEvent(c.PATIENT_RECORD, action, outcome, when,
                      (sender, local.participant(False)), (_patient(patient),))


def order_record(local: Local, action: str, sender: Participant, patient: PatientRef,
                 order: OrderRef, when: datetime, outcome: str = c.SUCCESS) -> AuditEvent:
    """A.5.3.13: an order created, updated or cancelled; besides the patient (the one object
    the standard asks for), the order itself as a Job object with its numbers."""
    details = tuple((kind, value.encode()) for kind, value in (
        ("AccessionNumber", order.accession), ("PlacerOrderNumber", order.placer),
        ("FillerOrderNumber", order.filler), ("OrderControl", order.control),
        ("OrderStatus", order.status)) if value)
    key, id_type = ((order.accession, c.ACCESSION_NUMBER) if order.accession
                    else (order.placer, c.PLACER_NUMBER))
    if not patient.patient_id:  # a status change naming no patient: the order alone
        details += patient.details
    job = ParticipantObject(key, id_type, c.SYSTEM_OBJECT, c.ROLE_JOB, details=details)
    objects = (_patient(patient), job) if patient.patient_id else (job,)
    return AuditEvent(c.ORDER_RECORD, action, outcome, when,
                      (sender, local.participant(False)), objects)


def procedure_record(local: Local, action: str, performer: Participant, patient: PatientRef,
                     studies: tuple[StudyRef, ...], mpps_uid: str, status: str,
                     when: datetime, outcome: str = c.SUCCESS) -> AuditEvent:
    """A.5.3.15: a performed procedure step created or updated by a modality: each study it
    covers (with the MPPS, accession numbers, SOP classes) and the patient."""
    objects = [ParticipantObject(
        s.uid, c.STUDY_INSTANCE_UID, c.SYSTEM_OBJECT, c.ROLE_REPORT,
        details=(("PerformedProcedureStepStatus", status.encode()),) if status else (),
        # SOPClass is required once MPPS or Accession is given: none known is 0 instances
        description=Description((mpps_uid,) if mpps_uid else (), s.accessions,
                                s.sop_classes or (("", 0),), (s.uid,)))
               for s in studies]
    objects.append(_patient(patient))
    return AuditEvent(c.PROCEDURE_RECORD, action, outcome, when,
                      (performer, local.participant(False)), tuple(objects))


def security_alert(local: Local, alert: Code, peer: str, reason: str, when: datetime,
                   user: str = "", outcome: str = c.MINOR_FAILURE) -> AuditEvent:
    """A.5.3.11: a peer refused (failed TLS handshake, address, AE title or HL7 sender not
    allowed). The broker reports it; the peer performed it; the subject is the peer node."""
    host = _host(peer)
    performer = remote(user, peer, False, alternative=f"AETITLES={user}" if user else "")
    subject = ParticipantObject(host or "unknown", c.NODE_ID, c.SYSTEM_OBJECT, "", name=peer,
                                details=(("Alert Description", reason.encode()),))
    return AuditEvent(c.SECURITY_ALERT, EXECUTE, outcome, when,
                      (local.participant(False), performer), (subject,), types=(alert,),
                      outcome_description=reason)


def _patient(patient: PatientRef) -> ParticipantObject:
    return ParticipantObject(patient.patient_id, c.PATIENT_NUMBER, c.PERSON, c.ROLE_PATIENT,
                             name=patient.name, details=patient.details)


def _host(peer: str) -> str:
    """The address of a peer given as 'host:port', '[v6]:port' or a bare address."""
    try:
        return str(ipaddress.ip_address(peer.strip("[]")))
    except ValueError:
        return host_of(peer) if peer else ""


def _access_type(host: str) -> str:
    if not host:
        return ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return c.MACHINE_NAME
    return c.IP_ADDRESS
