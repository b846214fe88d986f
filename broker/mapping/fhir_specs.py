"""What a loaded FHIR mapping is (``fhir:`` in a mapping file): DICOM keywords from FHIRPath
expressions on a ServiceRequest (``%patient``: its Patient, ``%encounter``: its Encounter,
``%appointment``: the Appointment based on it), and the status table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker.mapping.transforms import Fn
from broker.model.orders import StepStatus

#: a compiled FHIRPath expression: (resource, environment variables) → values
Compiled = Callable[[Any, dict[str, Any]], list[Any]]

#: what a ServiceRequest's status (and intent) does: create or replace the order, set the
#: status of its steps, or nothing beyond keeping the resource
FHIR_ACTIONS = ("upsert", "status", "ignore")


@dataclass(frozen=True, slots=True)
class FhirField:
    keyword: str
    vr: str
    multi: bool
    #: (expression text, compiled expression): the first one that gives a value wins
    paths: tuple[tuple[str, Compiled], ...]
    transforms: tuple[tuple[str, Fn, Any], ...]
    default: Any
    value: Any
    required: bool
    where: str


@dataclass(frozen=True, slots=True)
class FhirStatusRule:
    action: str
    status: StepStatus


@dataclass(frozen=True, slots=True)
class FhirMapping:
    patient: tuple[FhirField, ...]
    procedure: tuple[FhirField, ...]
    steps: tuple[FhirField, ...]
    #: keys "status_intent" (active_order) or "status" alone (revoked)
    status: dict[str, FhirStatusRule]
    study_uid_missing: str
    study_uid_seed: tuple[str, ...]
    absent_steps: str
    where: str

    def rule(self, status: str, intent: str) -> FhirStatusRule | None:
        return self.status.get(f"{status}_{intent}") or self.status.get(status)
