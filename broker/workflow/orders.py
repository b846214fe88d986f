"""Applying patient and order events to the store (runs inside the writer's transaction):
the decisions here, a few set-based statements per event in broker.store.orders."""

from __future__ import annotations

from broker.model.orders import (
    Attrs,
    DomainError,
    Event,
    OrderAction,
    OrderChange,
    Patient,
    PatientIdChange,
    PatientKey,
    PatientMerge,
    PatientUpdate,
    StepStatus,
)
from broker.store.messages import Accepted
from broker.store.orders import Guard, OrderRepo, ProcedureRow, StepChange, StepRow

#: steps in these states have been performed: an order update leaves them as they are
PERFORMED = frozenset({StepStatus.STARTED, StepStatus.DEPARTED, StepStatus.COMPLETED})
FINAL = frozenset({StepStatus.COMPLETED, StepStatus.DISCONTINUED, StepStatus.CANCELED})


def merge_attrs(old: Attrs, new: Attrs) -> Attrs:
    """New values replace old ones; an explicit empty value ('""' in HL7) removes one."""
    merged = dict(old)
    for key, value in new.items():
        if value in ("", []):
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def patient_lock(key: PatientKey) -> str:
    return f"patient:{key.issuer}|{key.patient_id}"


def study_lock(study_uid: str) -> str:
    return f"study:{study_uid}"


def lock_keys(events: list[Event]) -> list[str]:
    """The business keys the events read and write: the transactions of brokers sharing one
    database that touch the same patient, order or study are applied in turn (an A40 merge
    and an order for the merged-away patient meet on the prior patient's key)."""
    keys: list[str] = []
    for ev in events:
        if isinstance(ev, PatientUpdate):
            keys.append(patient_lock(ev.patient.key))
        elif isinstance(ev, PatientMerge):
            keys += [patient_lock(ev.surviving.key), patient_lock(ev.prior)]
        elif isinstance(ev, PatientIdChange):
            keys += [patient_lock(ev.patient.key), patient_lock(ev.old)]
        else:
            if ev.patient is not None:
                keys.append(patient_lock(ev.patient.key))
            attrs = ev.procedure.attrs
            keys += [study_lock(str(attrs.get("StudyInstanceUID", ""))),
                     f"placer:{attrs.get('PlacerOrderNumberImagingServiceRequest', '')}",
                     f"accession:{attrs.get('AccessionNumber', '')}"]
    return [k for k in keys if not k.endswith(":") and not k.endswith(":|")]


def apply(repo: OrderRepo, event: Event, *, cancel_started: bool = False) -> None:
    """Apply one event; ``cancel_started`` lets CA/DC stop steps a modality has started."""
    if isinstance(event, PatientUpdate):
        upsert_patient(repo, event.patient)
    elif isinstance(event, PatientMerge):
        merge_patients(repo, event)
    elif isinstance(event, PatientIdChange):
        change_patient_id(repo, event)
    else:
        apply_order(repo, event, cancel_started)


def upsert_patient(repo: OrderRepo, patient: Patient) -> int:
    """The patient's row id (following merges), created or updated with the new values."""
    new_id = repo.insert_patient(patient.key, merge_attrs({}, patient.attrs))
    if new_id is not None:
        return new_id
    row = repo.resolve_patient(patient.key)
    assert row is not None
    if patient.attrs:
        repo.update_patient(row.id, merge_attrs(row.attrs, patient.attrs), previous=row.attrs)
    return row.id


def merge_patients(repo: OrderRepo, event: PatientMerge) -> None:
    surviving = upsert_patient(repo, event.surviving)
    prior = repo.patient(event.prior)
    if prior is None or prior.id == surviving:
        return
    repo.move_procedures(prior.id, surviving)
    repo.mark_merged(prior.id, surviving)


def change_patient_id(repo: OrderRepo, event: PatientIdChange) -> None:
    old = repo.patient(event.old)
    new = repo.patient(event.patient.key)
    if old is None or (new is not None and old.merged_into == new.id):
        upsert_patient(repo, event.patient)
        return
    if new is not None and new.id != old.id:
        raise DomainError(
            f"cannot change patient ID {event.old} to {event.patient.key}: a patient with the "
            "new ID already exists (send A40 to merge them)", "PatientID", "conflict")
    repo.update_patient(old.id, merge_attrs(old.attrs, event.patient.attrs), event.patient.key,
                        previous=old.attrs)


def _find_procedure(repo: OrderRepo, event: OrderChange) -> ProcedureRow | None:
    attrs = event.procedure.attrs
    row = repo.procedure_by_uid(event.procedure.study_uid)
    if row is None and (event.procedure.generated_uid or event.action is OrderAction.STATUS):
        row = repo.procedure_by_order(
            str(attrs.get("PlacerOrderNumberImagingServiceRequest", "")),
            str(attrs.get("AccessionNumber", "")))
    return row


def apply_order(repo: OrderRepo, event: OrderChange, cancel_started: bool = False) -> None:
    if event.action is OrderAction.UPSERT and not event.procedure.generated_uid:
        _upsert_order(repo, event)
        return
    row = _find_procedure(repo, event)
    if event.action is OrderAction.STATUS:
        if row is None:
            attrs = event.procedure.attrs
            raise DomainError(
                f"order {event.control} names an unknown order (placer order "
                f"{attrs.get('PlacerOrderNumberImagingServiceRequest', '')!r}, accession "
                f"{attrs.get('AccessionNumber', '')!r}, Study Instance UID "
                f"{event.procedure.study_uid!r})",
                "PlacerOrderNumberImagingServiceRequest", "unknown")
        steps = repo.steps(row.id)
        stopping = event.status in (StepStatus.CANCELED, StepStatus.DISCONTINUED)
        started = [s for s in steps if s.status in PERFORMED and s.status is not
                   StepStatus.COMPLETED]
        if stopping and started and not cancel_started:
            raise DomainError(
                f"order {event.control}: step {started[0].sps_id} is {started[0].status.value} "
                "(a modality is performing it) and is not cancelled from HL7; end it at the "
                "modality, or set hl7.cancel_started_steps", "ScheduledProcedureStepID",
                "conflict")
        if event.patient is not None:
            upsert_patient(repo, event.patient)
        repo.set_steps_status([s.id for s in steps if s.status not in FINAL], event.status)
        repo.touch_procedure(row.id, event.control)
        return
    _upsert_order(repo, event, row)


def is_new_order(events: list[Event]) -> bool:
    """Whether the events are one order that place_order starts with (a RIS's usual NW):
    ``apply_new_order`` can then check the control ID in the same statement."""
    if len(events) != 1 or not isinstance(events[0], OrderChange):
        return False
    ev = events[0]
    return (ev.action is OrderAction.UPSERT and not ev.procedure.generated_uid
            and ev.patient is not None)


def apply_new_order(repo: OrderRepo, event: OrderChange, unless_accepted: Guard
                    ) -> Accepted | None:
    """Apply an order (``is_new_order``) unless its message was accepted before: then
    nothing is applied and the accepted message is returned."""
    return _upsert_order(repo, event, unless_accepted=unless_accepted)


def _upsert_order(repo: OrderRepo, event: OrderChange, row: ProcedureRow | None = None,
                  unless_accepted: Guard | None = None) -> Accepted | None:
    """Create the requested procedure with its steps, or replace the step set of one."""
    assert event.patient is not None
    new_steps = event.procedure.steps
    if row is None:
        placed = repo.place_order(event.patient.key, merge_attrs({}, event.patient.attrs),
                                  event.procedure.attrs, event.control,
                                  [s.attrs for s in new_steps], event.status, unless_accepted)
        if placed.accepted is not None:
            return placed.accepted
        patient_fk, known = placed.patient_fk, placed.existing
        if known is not None and event.patient.attrs:
            repo.update_patient(patient_fk, merge_attrs(known.attrs, event.patient.attrs),
                                previous=known.attrs)
        if placed.procedure_fk is not None:
            return None
        found = repo.procedure_with_steps(event.procedure.study_uid)
        assert found is not None
        row, current = found
    else:
        patient_fk = upsert_patient(repo, event.patient)
        current = repo.steps(row.id)
    attrs = merge_attrs(row.attrs, event.procedure.attrs)
    attrs["StudyInstanceUID"] = row.study_uid
    repo.update_procedure(row.id, patient_fk, attrs, event.control)
    existing: dict[str, StepRow] = {s.sps_id: s for s in current}
    changes: list[StepChange] = []
    added: list[Attrs] = []
    for new_step in new_steps:
        step = existing.pop(new_step.sps_id, None)
        if step is None:
            added.append(new_step.attrs)
        else:
            keep = step.status in PERFORMED or step.status in FINAL
            changes.append(StepChange(step, new_step.attrs,
                                      step.status if keep else event.status))
    repo.update_steps(changes)
    repo.insert_steps(row.id, added, event.status)
    left_out = [s.id for s in existing.values()
                if s.status not in PERFORMED and s.status not in FINAL]
    if event.absent_steps == "delete":
        repo.delete_steps(left_out)
    else:
        repo.set_steps_status(left_out, StepStatus.CANCELED)
    return None
