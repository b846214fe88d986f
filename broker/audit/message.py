"""One audit message as data, and its XML (DICOM PS3.15 A.5.1, the schema shipped in
``schema/audit-message.rng``): elements in the schema's order, every text made XML-safe."""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime

from broker.audit.codes import APPLICATION_SERVER, Code

#: characters XML 1.0 cannot hold (C0 controls but tab, CR, LF; surrogates; U+FFFE/F)
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True, slots=True)
class Participant:
    """An ActiveParticipant: a person, a process or a node."""

    user_id: str
    requestor: bool
    alternative_id: str = ""
    user_name: str = ""
    roles: tuple[Code, ...] = ()
    #: NetworkAccessPointID and its type (codes.MACHINE_NAME or codes.IP_ADDRESS)
    access_point: str = ""
    access_point_type: str = ""


@dataclass(frozen=True, slots=True)
class Description:
    """A ParticipantObjectDescription: MPPS, accession numbers, SOP classes (UID and number
    of instances) and the studies an object holds."""

    mpps: tuple[str, ...] = ()
    accessions: tuple[str, ...] = ()
    sop_classes: tuple[tuple[str, int], ...] = ()
    studies: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ParticipantObject:
    """A ParticipantObjectIdentification. The schema wants a name or a query: an object
    without a query always gets a ParticipantObjectName (empty when it has none)."""

    object_id: str
    id_type: Code
    type_code: str
    role: str
    name: str = ""
    query: bytes | None = None
    #: ParticipantObjectDetail type-value pairs (the values are sent base64)
    details: tuple[tuple[str, bytes], ...] = ()
    description: Description | None = None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    event_id: Code
    action: str
    outcome: str
    when: datetime
    participants: tuple[Participant, ...]
    objects: tuple[ParticipantObject, ...] = ()
    types: tuple[Code, ...] = ()
    outcome_description: str = ""


@dataclass(frozen=True, slots=True)
class AuditSource:
    """AuditSourceIdentification: who reports (``audit.audit_source_id``) and where."""

    source_id: str
    site_id: str = ""


def clean(text: str) -> str:
    """``text`` with each character XML cannot carry replaced by U+FFFD."""
    return _NOT_XML.sub("\ufffd", text)


def event_time(when: datetime) -> str:
    """An xsd:dateTime with its time zone (A.5.2.5), to the millisecond."""
    return when.isoformat(timespec="milliseconds")


def to_xml(event: AuditEvent, source: AuditSource) -> bytes:
    """The UTF-8 XML document of one audit message."""
    root = ET.Element("AuditMessage")
    ident = _sub(root, "EventIdentification", EventActionCode=event.action,
                 EventDateTime=event_time(event.when), EventOutcomeIndicator=event.outcome)
    _code(ident, "EventID", event.event_id)
    for code in event.types:
        _code(ident, "EventTypeCode", code)
    if event.outcome_description:
        _sub(ident, "EventOutcomeDescription").text = clean(event.outcome_description)
    for p in event.participants:
        _participant(root, p)
    src = _sub(root, "AuditSourceIdentification", AuditEnterpriseSiteID=source.site_id,
               AuditSourceID=source.source_id)
    _sub(src, "AuditSourceTypeCode", **{"csd-code": APPLICATION_SERVER})
    for obj in event.objects:
        _object(root, obj)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document


def _sub(parent: ET.Element, tag: str, **attributes: str) -> ET.Element:
    """A child element with the attributes that have a value."""
    return ET.SubElement(parent, tag, {k: clean(v) for k, v in attributes.items() if v})


def _code(parent: ET.Element, tag: str, code: Code) -> None:
    _sub(parent, tag, **{"csd-code": code.code}, codeSystemName=code.system,
         originalText=code.meaning)


def _participant(root: ET.Element, p: Participant) -> None:
    element = _sub(root, "ActiveParticipant", UserID=p.user_id or "-",
                   AlternativeUserID=p.alternative_id, UserName=p.user_name,
                   UserIsRequestor="true" if p.requestor else "false",
                   NetworkAccessPointID=p.access_point,
                   NetworkAccessPointTypeCode=p.access_point_type if p.access_point else "")
    for role in p.roles:
        _code(element, "RoleIDCode", role)


def _object(root: ET.Element, obj: ParticipantObject) -> None:
    element = _sub(root, "ParticipantObjectIdentification",
                   ParticipantObjectID=obj.object_id or "-",
                   ParticipantObjectTypeCode=obj.type_code,
                   ParticipantObjectTypeCodeRole=obj.role)
    _code(element, "ParticipantObjectIDTypeCode", obj.id_type)
    if obj.query is not None:
        _sub(element, "ParticipantObjectQuery").text = base64.b64encode(obj.query).decode()
    else:
        _sub(element, "ParticipantObjectName").text = clean(obj.name)
    for kind, value in obj.details:
        _sub(element, "ParticipantObjectDetail", type=kind,
             value=base64.b64encode(value).decode())
    if obj.description is not None:
        _description(_sub(element, "ParticipantObjectDescription"), obj.description)


def _description(element: ET.Element, d: Description) -> None:
    for uid in d.mpps:
        _sub(element, "MPPS", UID=uid)
    for number in d.accessions:
        _sub(element, "Accession", Number=number)
    for uid, count in d.sop_classes:
        _sub(element, "SOPClass", UID=uid, NumberOfInstances=str(count))
    if d.studies:
        contains = _sub(element, "ParticipantObjectContainsStudy")
        for uid in d.studies:
            _sub(contains, "StudyIDs", UID=uid)
