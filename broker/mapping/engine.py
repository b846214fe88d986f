"""Turns a parsed HL7 message into domain events, following a MappingSet."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Any

from broker.hl7.ack import Hl7Error, Hl7Reject
from broker.hl7.message import Message, Segment
from broker.hl7.path import Scope, first_value, pick, values
from broker.mapping.dicom_safe import replacement, safe_items
from broker.mapping.specs import FieldSpec, MappingSet, MessageMapping, StationRule
from broker.mapping.transforms import TransformContext, TransformError, decimal_string
from broker.model.orders import (
    Attrs,
    Event,
    OrderAction,
    OrderChange,
    Patient,
    PatientIdChange,
    PatientKey,
    PatientMerge,
    PatientUpdate,
    Procedure,
    Step,
)

Scopes = list[Scope]
#: namespace of the UUIDs behind generated Study Instance UIDs (2.25.<uuid as integer>)
STUDY_UID_NAMESPACE = uuid.UUID("6f2b8a8e-3c52-4d5e-9a57-2b1f4a0c9e11")
HL7_NULL = '""'


def reject(ack: str, code: int, text: str, location: str = "") -> Hl7Reject:
    return Hl7Reject(ack, Hl7Error(code, text, location))


class _Evaluator:
    def __init__(self, message: Message, mappings: MappingSet) -> None:
        self.message = message
        self.ctx = TransformContext(message, mappings.tables)
        self.origin: dict[str, str] = {}
        self.warnings: list[Hl7Error] = []

    def block(self, specs: Sequence[FieldSpec], scopes: Scopes) -> Attrs:
        attrs: Attrs = {}
        for spec in specs:
            value = self.field(spec, scopes)
            if value is not None:
                attrs[spec.keyword] = value
        return attrs

    def field(self, spec: FieldSpec, scopes: Scopes) -> Any:
        if spec.value is not None:
            return spec.value
        msg = self.message
        esc = msg.delimiters.escape
        use = scopes[:1] if spec.group_only else scopes
        for path in spec.paths:
            if path.repeats:
                raws = values(path, msg, use)
                if not any(raws):
                    continue
            else:
                raw = pick(path, msg, use) if path.simple else first_value(path, msg, use)
                if not raw:
                    continue
                if spec.plain:  # the usual field: one value, as it stands
                    self.origin[spec.keyword] = path.text
                    if raw == HL7_NULL:
                        return [] if spec.multi else ""
                    text = msg.text(raw) if esc in raw else raw
                    if not text:
                        continue
                    if "\\" not in text:
                        return [text] if spec.multi else text
                raws = [raw]
            self.origin[spec.keyword] = path.text
            if raws[0] == HL7_NULL and len(raws) == 1:
                return [] if spec.multi else ""
            items: list[Any] = raws if spec.structural else [
                msg.text(r) if esc in r else r for r in raws]
            notes = self.ctx.notes
            noted = len(notes)
            try:
                for _name, fn, param in spec.transforms:
                    items = fn(items, self.ctx, param)
                items = [i for i in items if i not in ("", None)]
                if items and spec.unit:
                    items = self._scale(spec, items, use)
            except TransformError as exc:
                raise reject("AE", 102, f"{spec.keyword}: {exc}", str(path)) from exc
            if len(notes) > noted:
                for note in notes[noted:]:
                    self.warn(f"{spec.keyword}: {note}", str(path))
            if not items:
                continue
            if len(items) == 1 and type(items[0]) is str and "\\" not in items[0]:
                return items if spec.multi else items[0]
            items, changed = safe_items(spec.keyword, spec.vr, items)
            for where, vr in changed:
                self.warn(f"{where}: a backslash separates values of a DICOM {vr}; "
                          f"replaced by {replacement(vr)!r}", str(path))
            return items if spec.multi else items[0]
        if spec.paths:
            self.origin.setdefault(spec.keyword, spec.paths[0].text)
        if spec.default is not None:
            return spec.default
        if spec.required:
            where = str(spec.paths[0]) if spec.paths else ""
            segment = spec.paths[0].segment if spec.paths else ""
            if segment and msg.first(segment) is None:
                reason = f"{spec.keyword} is required but the message has no {segment} segment"
            else:
                reason = f"{spec.keyword} is required but {where or 'it'} is empty"
            raise reject("AE", 101, reason, where)
        return None

    def warn(self, text: str, location: str) -> None:
        """A change made to the message's data, answered and stored as an HL7 warning."""
        warning = Hl7Error(102, text, location, "W")
        if warning not in self.warnings:
            self.warnings.append(warning)

    def _scale(self, spec: FieldSpec, items: list[Any], scopes: Scopes) -> list[Any]:
        assert spec.unit is not None
        raw = values(spec.unit.path, self.message, scopes)[:1]
        unit = self.message.text(self.message.component(raw[0], 1)).strip() if raw else ""
        if not unit:
            return items
        if unit not in spec.unit.factors:
            known = ", ".join(sorted(spec.unit.factors))
            raise TransformError(f"unit {unit!r} ({spec.unit.path}) is not one of {known}")
        factor = Decimal(str(spec.unit.factors[unit]))
        return [decimal_string(factor, str(i)) for i in items]

    def text(self, path_scopes: tuple[Any, Scopes]) -> str:
        path, scopes = path_scopes
        raws = values(path, self.message, scopes)
        return self.message.text(raws[0]) if raws else ""


def map_message(message: Message, mappings: MappingSet,
                warnings: list[Hl7Error] | None = None) -> list[Event]:
    """The domain events of a message; raises Hl7Reject (AR/AE) with the field at fault.

    What the mapping had to leave out or change (a name repetition, a backslash) is
    appended to ``warnings`` as severity-W errors.
    """
    return _map(message, mappings, warnings if warnings is not None else [])


def _map(message: Message, mappings: MappingSet, warnings: list[Hl7Error]) -> list[Event]:
    mm = mappings.for_type(message.message_type)
    if mm is None:
        known_codes = {t.split("^")[0] for t in mappings.messages}
        if message.message_code in known_codes:
            raise reject("AR", 201, f"event {message.trigger_event!r} of "
                         f"{message.message_code} is not handled", "MSH-9.2")
        raise reject("AR", 200, f"message type {message.message_type!r} is not handled "
                     f"(accepted: {', '.join(sorted(mappings.messages))})", "MSH-9")
    ev = _Evaluator(message, mappings)
    ev.warnings = warnings
    if mm.kind == "order":
        return _order_events(ev, mm, mappings)
    scopes: Scopes = [Scope(message.segments)]
    patient = _patient(ev, mm.patient, scopes)
    if mm.kind == "patient_update":
        return [PatientUpdate(patient, ev.origin)]
    patient_origin = dict(ev.origin)
    prior_attrs = ev.block(mm.prior, scopes)
    ev.origin = {**{f"prior.{k}": v for k, v in ev.origin.items()}, **patient_origin}
    prior = PatientKey(str(prior_attrs.get("PatientID", "")),
                       str(prior_attrs.get("IssuerOfPatientID", "")))
    if mm.kind == "patient_merge":
        return [PatientMerge(patient, prior, ev.origin)]
    return [PatientIdChange(patient, prior, ev.origin)]


def _patient(ev: _Evaluator, specs: Sequence[FieldSpec], scopes: Scopes) -> Patient:
    attrs = ev.block(specs, scopes)
    key = PatientKey(str(attrs.pop("PatientID", "")), str(attrs.pop("IssuerOfPatientID", "")))
    if not key.patient_id:
        where = ev.origin.get("PatientID", "PID-3")
        raise reject("AE", 101, f"the message names no patient (PatientID from {where})", where)
    return Patient(key, attrs)


def _groups(message: Message, start: str) -> tuple[Scope, list[Scope]]:
    """The segments before the first ``start`` segment, and one group per ``start``."""
    header: list[Segment] = []
    groups: list[list[Segment]] = []
    for seg in message.segments:
        if seg.name == start:
            groups.append([seg])
        elif groups:
            groups[-1].append(seg)
        else:
            header.append(seg)
    return Scope(header), [Scope(g) for g in groups]


def _order_events(ev: _Evaluator, mm: MessageMapping, mappings: MappingSet) -> list[Event]:
    message = ev.message
    header, groups = _groups(message, mm.group_segment)
    if not groups:
        raise reject("AE", 100, f"the order has no {mm.group_segment} segment",
                     mm.group_segment)
    rules = []
    for group in groups:
        assert mm.order_code is not None and mm.order_status is not None
        code = ev.text((mm.order_code, [group]))
        status = ev.text((mm.order_status, [group]))
        rule = mappings.order_control.get(f"{code}_{status}") or mappings.order_control.get(code)
        if rule is None:
            raise reject("AE", 103, f"order control {code!r} with order status {status!r} "
                         f"({mm.order_code}/{mm.order_status}) is not in the order_control "
                         "table", str(mm.order_code))
        rules.append((f"{code}_{status}" if status else code, rule))
    needs_patient = any(r.action is OrderAction.UPSERT for _, r in rules)
    patient = None
    if needs_patient or message.first("PID") is not None:
        patient = _patient(ev, mm.patient, [groups[0], header])
    events: list[OrderChange] = []
    for group, (control, rule) in zip(groups, rules, strict=True):
        scopes: Scopes = [group, header]
        proc = Procedure(ev.block(mm.procedure, scopes))
        if rule.action is OrderAction.UPSERT:
            proc.steps = _steps(ev, mm, mappings, group, header, proc, patient)
            if not proc.steps:
                wanted = " or ".join(mm.step_segments)
                raise reject("AE", 100, f"order {control} has no {wanted} segment to make a "
                             "scheduled step of", mm.step_segments[0])
        _study_uid(ev, mm, proc, message)
        same = next((e for e in events if e.procedure.study_uid == proc.study_uid), None)
        if same is not None and (same.action, same.status) == (rule.action, rule.status):
            _merge_group(ev, same.procedure, proc)  # one requested procedure, several steps
            continue
        events.append(OrderChange(patient, proc, rule.action, rule.status, control,
                                  mm.absent_steps, dict(ev.origin)))
    for order in events:
        _check_step_ids(ev, order.procedure)
    return list(events)


def _merge_group(ev: _Evaluator, into: Procedure, group: Procedure) -> None:
    """A further order group of the same Study Instance UID adds its steps; it may not
    contradict what the first group says of the requested procedure."""
    for keyword, value in group.attrs.items():
        if keyword in into.attrs and into.attrs[keyword] != value:
            raise reject("AE", 205, f"two order groups share Study Instance UID "
                         f"{into.study_uid} but differ in {keyword} ({into.attrs[keyword]!r} / "
                         f"{value!r})", ev.origin.get(keyword, ""))
    into.attrs.update({k: v for k, v in group.attrs.items() if k not in into.attrs})
    into.steps.extend(group.steps)


def _check_step_ids(ev: _Evaluator, procedure: Procedure) -> None:
    """Number the steps that have no SPS ID (1, 2 … within the procedure); refuse two
    steps with the same SPS ID."""
    seen: set[str] = set()
    for index, step in enumerate(procedure.steps, start=1):
        if not step.attrs.get("ScheduledProcedureStepID"):
            step.attrs["ScheduledProcedureStepID"] = str(index)
        sps_id = step.sps_id
        if sps_id in seen:
            where = ev.origin.get("ScheduledProcedureStepID", "")
            raise reject("AE", 205, f"requested procedure {procedure.study_uid} has two "
                         f"scheduled steps with SPS ID {sps_id!r}", where)
        seen.add(sps_id)


def _steps(ev: _Evaluator, mm: MessageMapping, mappings: MappingSet, group: Scope,
           header: Scope, proc: Procedure, patient: Patient | None) -> list[Step]:
    for name in mm.step_segments:
        segments = group.by_name.get(name)
        if segments:
            break
    else:
        return []
    steps = []
    for seg in segments:
        scopes: Scopes = [Scope([seg]), group, header]
        attrs = ev.block(mm.steps, scopes)
        if not attrs.get("ScheduledStationAETitle"):
            _apply_station_rules(ev, mappings.station_rules, attrs, proc, patient, scopes)
        steps.append(Step(attrs))
    return steps


def _apply_station_rules(ev: _Evaluator, rules: Sequence[StationRule], attrs: Attrs,
                         proc: Procedure, patient: Patient | None, scopes: Scopes) -> None:
    for rule in rules:
        if all(_condition_holds(ev, key, path, wanted, attrs, proc, patient, scopes)
               for key, path, wanted in rule.when):
            for key, value in rule.set.items():
                attrs.setdefault(key, value if not isinstance(value, list) else list(value))
            return


def _condition_holds(ev: _Evaluator, key: str, path: Any, wanted: tuple[str, ...],
                     attrs: Attrs, proc: Procedure, patient: Patient | None,
                     scopes: Scopes) -> bool:
    if path is not None:
        actual: Any = ev.text((path, scopes))
    else:
        actual = attrs.get(key, proc.attrs.get(key, patient.attrs.get(key, "") if patient else ""))
    candidates = actual if isinstance(actual, list) else [actual]
    return any(fnmatchcase(str(c), w) for c in candidates for w in wanted)


def _study_uid(ev: _Evaluator, mm: MessageMapping, proc: Procedure, message: Message) -> None:
    if proc.attrs.get("StudyInstanceUID"):
        return
    where = ev.origin.get("StudyInstanceUID", "ZDS-1")
    if mm.study_uid_missing == "reject":
        raise reject("AE", 101, "Study Instance UID is missing and the mapping rejects orders "
                     "without one", where)
    seed = [str(proc.attrs.get(k, "")) for k in mm.study_uid_seed]
    if not any(seed):
        raise reject("AE", 101, "Study Instance UID is missing and none of "
                     f"{', '.join(mm.study_uid_seed)} is present to derive one", where)
    proc.attrs["StudyInstanceUID"] = generate_study_uid(message.sending_application,
                                                        message.sending_facility, seed)
    proc.generated_uid = True


def generate_study_uid(application: str, facility: str, seed: Sequence[str]) -> str:
    """A deterministic UID: the same order resent gets the same Study Instance UID."""
    name = "|".join([application, facility, *seed])
    return f"2.25.{uuid.uuid5(STUDY_UID_NAMESPACE, name).int}"
