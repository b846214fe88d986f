"""A FHIR ServiceRequest (and its Patient) → the domain events an HL7 order makes, following
the ``fhir:`` mapping (FHIRPath expressions, transforms, tables, station rules)."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any

from broker.mapping.dicom_safe import safe_items
from broker.mapping.engine import generate_study_uid
from broker.mapping.fhir_paths import VARIABLES
from broker.mapping.fhir_specs import FhirField, FhirMapping
from broker.mapping.fhir_transforms import context
from broker.mapping.specs import MappingSet, StationRule
from broker.mapping.transforms import TransformError
from broker.model.orders import (
    Attrs,
    OrderAction,
    OrderChange,
    Patient,
    PatientKey,
    Procedure,
    Step,
)

#: the application part of a generated Study Instance UID's name (HL7 uses MSH-3/MSH-4)
UID_SOURCE = "FHIR"


class FhirMappingError(ValueError):
    """The resource is valid FHIR but cannot become a worklist entry; ``expression`` names
    the element (FHIRPath from the resource's type), ``code`` the OperationOutcome code."""

    def __init__(self, reason: str, expression: str = "", code: str = "business-rule",
                 unknown: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expression = expression
        self.code = code
        #: a status change for an order the broker does not hold
        self.unknown = unknown


def _root(text: str, resource_type: str) -> str:
    """An expression as FHIRPath from the resource (``%patient.x`` → ``Patient.x``)."""
    head, dot, rest = text.partition(".")
    if dot and head[1:] in VARIABLES and head.startswith("%"):
        return f"{VARIABLES[head[1:]]}.{rest}"
    return f"{resource_type}.{text}"


class _Evaluator:
    def __init__(self, mappings: MappingSet, resource: dict[str, Any],
                 patient: dict[str, Any] | None,
                 related: dict[str, dict[str, Any] | None] | None = None) -> None:
        self.ctx = context(mappings.tables)
        self.resource = resource
        # a variable the order has no resource for is an empty one of its type
        found = {"patient": patient, **(related or {})}
        self.env = {name: found.get(name) or {"resourceType": kind}
                    for name, kind in VARIABLES.items()}
        self.origin: dict[str, str] = {}
        self.type = str(resource.get("resourceType", ""))

    def block(self, fields: Sequence[FhirField]) -> Attrs:
        attrs: Attrs = {}
        for spec in fields:
            value = self.field(spec)
            if value is not None:
                attrs[spec.keyword] = value
        return attrs

    def field(self, spec: FhirField) -> Any:
        if spec.value is not None:
            return spec.value
        for text, fn in spec.paths:
            items = [i for i in fn(self.resource, self.env) if i not in ("", None)]
            if not items:
                continue
            where = _root(text, self.type)
            self.origin[spec.keyword] = where
            try:
                for _name, transform, param in spec.transforms:
                    items = transform(items, self.ctx, param)
            except TransformError as exc:
                raise FhirMappingError(f"{spec.keyword}: {exc}", where, "value") from exc
            items = [i for i in items if i not in ("", None)]
            if not items:
                continue
            if any(isinstance(i, dict | list) for i in items) and spec.vr != "SQ":
                raise FhirMappingError(f"{spec.keyword}: {text!r} gives an element, not a value "
                                       f"(mapping {spec.where})", where, "processing")
            items, _ = safe_items(spec.keyword, spec.vr, [i if isinstance(i, dict) else str(i)
                                                          for i in items])
            return items if spec.multi else items[0]
        if spec.default is not None:
            return spec.default
        if spec.required:
            where = _root(spec.paths[0][0], self.type) if spec.paths else ""
            raise FhirMappingError(f"{spec.keyword} is required but {where or 'it'} is empty",
                                   where, "required")
        return None


def map_patient(patient: dict[str, Any], mappings: MappingSet) -> Patient:
    """A Patient resource → the worklist's patient (PatientID and issuer are its key)."""
    mapping = _mapping(mappings)
    ev = _Evaluator(mappings, patient, patient)
    return _patient(ev, mapping)


def _patient(ev: _Evaluator, mapping: FhirMapping) -> Patient:
    attrs = ev.block(mapping.patient)
    key = PatientKey(str(attrs.pop("PatientID", "")), str(attrs.pop("IssuerOfPatientID", "")))
    if not key.patient_id:
        raise FhirMappingError("the patient has no identifier the mapping takes as Patient ID",
                               "Patient.identifier", "required")
    return Patient(key, attrs)


def map_service_request(request: dict[str, Any], patient: dict[str, Any] | None,
                        mappings: MappingSet, encounter: dict[str, Any] | None = None,
                        appointment: dict[str, Any] | None = None) -> OrderChange | None:
    """The order a ServiceRequest makes (None: its status table entry says ignore);
    ``encounter`` and ``appointment`` are ``%encounter`` and ``%appointment``."""
    mapping = _mapping(mappings)
    status, intent = str(request.get("status", "")), str(request.get("intent", ""))
    rule = mapping.rule(status, intent)
    if rule is None:
        raise FhirMappingError(f"status {status!r} with intent {intent!r} is not in the "
                               "status table of the FHIR mapping", "ServiceRequest.status",
                               "not-supported")
    if rule.action == "ignore":
        return None
    ev = _Evaluator(mappings, request, patient,
                    {"encounter": encounter, "appointment": appointment})
    action = OrderAction.UPSERT if rule.action == "upsert" else OrderAction.STATUS
    person = _patient(ev, mapping) if patient is not None else None
    if person is None and action is OrderAction.UPSERT:
        raise FhirMappingError("the order's subject is not a Patient the broker holds",
                               "ServiceRequest.subject", "not-found")
    proc = Procedure(ev.block(mapping.procedure))
    if action is OrderAction.UPSERT:
        attrs = ev.block(mapping.steps)
        if not attrs.get("ScheduledStationAETitle"):
            _station_rules(mappings.station_rules, attrs, proc, person)
        attrs.setdefault("ScheduledProcedureStepID", "1")
        proc.steps = [Step(attrs)]
    _study_uid(ev, mapping, proc)
    return OrderChange(person, proc, action, rule.status, f"FHIR {status}/{intent}",
                       mapping.absent_steps, dict(ev.origin))


def _mapping(mappings: MappingSet) -> FhirMapping:
    if mappings.fhir is None:
        raise FhirMappingError("the mapping folder has no fhir: mapping (mappings/fhir.yaml)",
                               "", "not-supported")
    return mappings.fhir


def _station_rules(rules: Sequence[StationRule], attrs: Attrs, proc: Procedure,
                   patient: Patient | None) -> None:
    """The first station rule whose conditions hold (a condition on an HL7 path never
    holds for a FHIR order)."""
    for rule in rules:
        if all(path is None and _holds(key, wanted, attrs, proc, patient)
               for key, path, wanted in rule.when):
            for key, value in rule.set.items():
                attrs.setdefault(key, value if not isinstance(value, list) else list(value))
            return


def _holds(key: str, wanted: tuple[str, ...], attrs: Attrs, proc: Procedure,
           patient: Patient | None) -> bool:
    actual = attrs.get(key, proc.attrs.get(key, patient.attrs.get(key, "") if patient else ""))
    candidates = actual if isinstance(actual, list) else [actual]
    return any(fnmatchcase(str(c), w) for c in candidates for w in wanted)


def _study_uid(ev: _Evaluator, mapping: FhirMapping, proc: Procedure) -> None:
    if proc.attrs.get("StudyInstanceUID"):
        return
    where = ev.origin.get("StudyInstanceUID", "ServiceRequest.identifier")
    if mapping.study_uid_missing == "reject":
        raise FhirMappingError("the order has no Study Instance UID (identifier system "
                               "urn:dicom:uid) and the mapping rejects orders without one",
                               where, "required")
    seed = [str(proc.attrs.get(k, "")) for k in mapping.study_uid_seed]
    if not any(seed):
        raise FhirMappingError("the order has no Study Instance UID and none of "
                               f"{', '.join(mapping.study_uid_seed)} to derive one from",
                               "ServiceRequest.identifier", "required")
    proc.attrs["StudyInstanceUID"] = generate_study_uid(UID_SOURCE, "", seed)
    proc.generated_uid = True
