"""The resources a ServiceRequest's mapping sees besides itself: ``%patient`` (its subject),
``%encounter`` (its ``encounter``) and ``%appointment`` (an Appointment whose ``basedOn``
names it). Entries of the same Bundle are stored before the ServiceRequest in the same
transaction (Patient, Coverage, Encounter, Appointment, ServiceRequest), with their
references already rewritten to ``Type/id``, so the store answers for both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.store.fhir import FhirRow
from broker.store.unit_of_work import UnitOfWork

#: Appointment statuses that book nothing: such an Appointment is not ``%appointment``
UNBOOKED = frozenset({"cancelled", "noshow", "entered-in-error"})


@dataclass(frozen=True, slots=True)
class Related:
    patient: dict[str, Any] | None
    encounter: dict[str, Any] | None
    appointment: dict[str, Any] | None


def _held(uow: UnitOfWork, reference: Any, resource_type: str) -> dict[str, Any] | None:
    text = str((reference or {}).get("reference", "")) if isinstance(reference, dict) else ""
    if not text.startswith(resource_type + "/"):
        return None
    row = uow.fhir.get(resource_type, text[len(resource_type) + 1:])
    return row.resource if row is not None else None


def related(uow: UnitOfWork, request: dict[str, Any],
            appointment: dict[str, Any] | None = None) -> Related:
    """What the ServiceRequest (stored id in ``request["id"]``) refers to, or is referred
    to by; ``appointment`` is an Appointment being written (it wins over its stored
    version)."""
    return Related(_held(uow, request.get("subject"), "Patient"),
                   _held(uow, request.get("encounter"), "Encounter"),
                   booked(uow, str(request.get("id", "")), appointment))


def booked(uow: UnitOfWork, request_id: str, writing: dict[str, Any] | None = None
           ) -> dict[str, Any] | None:
    """The Appointment based on ServiceRequest ``request_id`` that books it: among those
    not cancelled (``UNBOOKED``), the one written last."""
    if not request_id:
        return None
    rows: list[FhirRow] = uow.fhir.by_reference("Appointment", "basedOn",
                                                f"ServiceRequest/{request_id}")
    rows.sort(key=lambda r: (r.updated_at, r.version))
    found = {r.id: r.resource for r in rows}
    if writing is not None:
        found.pop(str(writing.get("id", "")), None)
        if based_on(writing, request_id):
            found["\0writing"] = writing  # the newest: last in the order of the dict
    live = [a for a in found.values() if str(a.get("status", "")) not in UNBOOKED]
    return live[-1] if live else None


def based_on(appointment: dict[str, Any], request_id: str) -> bool:
    return f"ServiceRequest/{request_id}" in service_requests(appointment)


def service_requests(appointment: dict[str, Any]) -> list[str]:
    """The ``ServiceRequest/{id}`` references of an Appointment's ``basedOn``."""
    refs = appointment.get("basedOn") or []
    return [str(r["reference"]) for r in refs if isinstance(r, dict)
            and str(r.get("reference", "")).startswith("ServiceRequest/")]
