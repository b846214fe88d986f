"""What a FHIR write does inside the writer's transaction: find the stored resource it
replaces (logical id, conditional identifier, key identifier), store it unless its digest is
unchanged, and apply the order or patient it maps to as the HL7 path does."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from broker.fhir.outcome import BUSINESS_RULE, NOT_FOUND, PRECONDITION, FhirError, Issue
from broker.fhir.requests import Write, dangling, digest, key_identifier, rewrite_references
from broker.mapping.fhir_engine import FhirMappingError, map_patient, map_service_request
from broker.mapping.specs import MappingSet
from broker.model.orders import DomainError, Event, OrderAction, OrderChange, PatientUpdate
from broker.store.fhir import FhirRow
from broker.store.unit_of_work import UnitOfWork
from broker.workflow.fhir_related import related, service_requests
from broker.workflow.orders import apply, lock_keys

#: before an order's changes: what queues the UPS state reports of the steps it moves
UpsWatch = Callable[[UnitOfWork, list[str]], Callable[[], int] | None]


@dataclass(slots=True)
class Stored:
    """What a write did: the resource as stored, 201 (created) or 200, changed or not."""

    row: FhirRow
    created: bool
    changed: bool
    events: list[Event] = field(default_factory=list)
    queued: int = 0

    @property
    def status(self) -> str:
        return "201 Created" if self.created else "200 OK"


@dataclass(slots=True)
class Target:
    row: FhirRow | None
    logical_id: str
    done: bool = False  # a conditional create that matched: nothing to store


def target(uow: UnitOfWork, write: Write) -> Target:
    """The stored resource a write replaces, or the id it creates."""
    repo = uow.fhir
    kind = write.type
    wanted = write.match or write.if_none_exist
    if wanted is not None:
        if uow.locks:
            uow.lock(f"fhir:{kind}|{wanted}")
        found = repo.by_identifier(kind, wanted.system, wanted.value)
        if len(found) > 1:
            raise FhirError.one(PRECONDITION, "multiple-matches", f"{len(found)} {kind} "
                                f"resources have identifier {wanted}", write.where)
        if found:
            return Target(found[0], found[0].id, done=write.if_none_exist is not None)
        if write.match is None:
            return Target(None, _new_id())
    if write.logical_id:
        return Target(repo.get(kind, write.logical_id), write.logical_id)
    system, value = key_identifier(write.resource)
    if value:
        if uow.locks:
            uow.lock(f"fhir:{kind}|{system}|{value}")
        found = repo.by_identifier(kind, system, value)
        same = [r for r in found if (r.identifier_system, r.identifier_value) == (system, value)]
        if same:
            return Target(same[0], same[0].id)
    return Target(None, _new_id())


def _new_id() -> str:
    return str(uuid.uuid4())


def store(uow: UnitOfWork, write: Write, where: Target, mappings: MappingSet,
          cancel_started: bool = False, ups_watch: UpsWatch | None = None) -> Stored:
    """Store one resource (its references already point at stored ``Type/id``s) and apply
    what it maps to. Raises FhirError; the caller's transaction then rolls back."""
    if where.done:
        assert where.row is not None
        return Stored(where.row, created=False, changed=False)
    kind = write.type
    resource = rewrite_references(write.resource, write.refs)
    loose = dangling(resource, write.where)
    if loose:
        raise FhirError.one(BUSINESS_RULE, "not-found", "the reference names no entry of "
                            "the Bundle", loose)
    resource["id"] = where.logical_id
    resource.pop("meta", None)
    fingerprint = digest(resource)
    old = where.row
    if old is not None and old.digest == fingerprint:
        return Stored(old, created=False, changed=False)
    events, study_uid, patient = _events(uow, write, resource, mappings)
    if old is not None and not study_uid:
        study_uid = old.study_uid
    queued = 0
    if events:
        if uow.locks:
            uow.lock(*lock_keys(events))
        watched = ups_watch(uow, [study_uid]) if ups_watch is not None and study_uid else None
        try:
            for ev in events:
                apply(uow.orders, ev, cancel_started=cancel_started)
        except DomainError as exc:
            code = "not-found" if exc.kind == "unknown" else "business-rule"
            raise FhirError(BUSINESS_RULE, [Issue(code, exc.reason, write.where)]) from exc
        queued = watched() if watched is not None else 0
        study_uid = _held_study_uid(uow, events) or study_uid
    system, value = key_identifier(resource)
    version = old.version + 1 if old is not None else 1
    resource["meta"] = {"versionId": str(version), "lastUpdated": instant(uow.now)}
    row = FhirRow(kind, where.logical_id, version, system, value, study_uid,
                  patient[0], patient[1], str(resource.get("status", "")), fingerprint,
                  _dump(resource), uow.now)
    uow.fhir.put(row)
    return Stored(row, created=old is None, changed=True, events=events, queued=queued)


def _events(uow: UnitOfWork, write: Write, resource: dict[str, Any], mappings: MappingSet
            ) -> tuple[list[Event], str, tuple[str, str]]:
    """The domain events of the resource, the Study Instance UID and patient key it maps to."""
    try:
        if write.type == "Patient":
            person = map_patient(resource, mappings)
            key = (person.key.patient_id, person.key.issuer)
            return [PatientUpdate(person, {"source": "FHIR"})], "", key
        if write.type == "Appointment":
            return _rebooked(uow, resource, mappings)
        if write.type != "ServiceRequest":
            return [], "", ("", "")
        found = related(uow, resource)
        if found.patient is None:
            subject = str((resource.get("subject") or {}).get("reference", ""))
            raise FhirError.one(BUSINESS_RULE, "not-found", f"subject {subject[:80]!r} is not "
                                "a Patient of the Bundle nor one the broker holds",
                                f"{write.where}.subject")
        order = map_service_request(resource, found.patient, mappings, found.encounter,
                                    found.appointment)
    except FhirMappingError as exc:
        raise _located(exc, write) from exc
    if order is None:
        return [], "", ("", "")
    key = (order.patient.key.patient_id, order.patient.key.issuer) if order.patient else ("", "")
    return [order], order.procedure.study_uid, key


#: the element of a ServiceRequest that names the resource a mapping fault is in
_NAMED_BY = {"Patient": "subject", "Encounter": "encounter"}


def _located(exc: FhirMappingError, write: Write) -> FhirError:
    """The mapping fault as an OperationOutcome, its expression from the write's place."""
    where = exc.expression
    head, dot, rest = where.partition(".")
    if write.index is not None and head == write.type:
        where = f"{write.where}.{rest}" if dot else write.where
    elif write.index is not None and write.type == "ServiceRequest" and head in _NAMED_BY:
        where = f"{write.where}.{_NAMED_BY[head]}"
    return FhirError.one(NOT_FOUND if exc.unknown else BUSINESS_RULE, exc.code, exc.reason,
                         where)


def _rebooked(uow: UnitOfWork, appointment: dict[str, Any], mappings: MappingSet
              ) -> tuple[list[Event], str, tuple[str, str]]:
    """An Appointment based on ServiceRequests the broker holds re-maps their orders (their
    step start, station …), as an update of the ServiceRequest does. (A ServiceRequest
    changed by the same Bundle is stored after it, and mapped again then.)"""
    events: list[Event] = []
    study_uid = ""
    for ref in service_requests(appointment):
        row = uow.fhir.get("ServiceRequest", ref.partition("/")[2])
        if row is None:
            continue
        request = row.resource
        found = related(uow, request, appointment)
        if found.patient is None:
            continue
        order = map_service_request(request, found.patient, mappings, found.encounter,
                                    found.appointment)
        if order is not None and order.action is OrderAction.UPSERT:
            events.append(order)
            study_uid = study_uid or row.study_uid
    return events, study_uid, ("", "")


def _held_study_uid(uow: UnitOfWork, events: list[Event]) -> str:
    """The Study Instance UID of the requested procedure an order with a derived UID went
    to: one found by placer/accession number (from HL7, say) keeps its own UID."""
    order = first_order(events)
    if order is None or not order.procedure.generated_uid:
        return ""
    if uow.orders.procedure_by_uid(order.procedure.study_uid) is not None:
        return order.procedure.study_uid
    attrs = order.procedure.attrs
    row = uow.orders.procedure_by_order(
        str(attrs.get("PlacerOrderNumberImagingServiceRequest", "")),
        str(attrs.get("AccessionNumber", "")))
    return row.study_uid if row is not None else ""


def instant(at: float) -> str:
    """A FHIR instant (UTC, milliseconds)."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at))
    return f"{seconds}.{int(at * 1000) % 1000:03d}Z"


def _dump(resource: dict[str, Any]) -> str:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":"))


def first_order(events: list[Event]) -> OrderChange | None:
    return next((e for e in events if isinstance(e, OrderChange)), None)
