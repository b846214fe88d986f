"""Applying patient and order events to the store (runs inside the writer's transaction)."""

from __future__ import annotations

from broker.model.orders import (
    Attrs,
    DomainError,
    Event,
    OrderAction,
    OrderChange,
    Patient,
    PatientIdChange,
    PatientMerge,
    PatientUpdate,
    StepStatus,
)
from broker.store.repo import ProcedureRow, Repo

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


def apply(repo: Repo, event: Event, *, cancel_started: bool = False) -> None:
    """Apply one event; ``cancel_started`` lets CA/DC stop steps a modality has started."""
    if isinstance(event, PatientUpdate):
        upsert_patient(repo, event.patient)
    elif isinstance(event, PatientMerge):
        merge_patients(repo, event)
    elif isinstance(event, PatientIdChange):
        change_patient_id(repo, event)
    else:
        apply_order(repo, event, cancel_started)


def upsert_patient(repo: Repo, patient: Patient) -> int:
    """The patient's row id (following merges), created or updated with the new values."""
    new_id = repo.insert_patient(patient.key, merge_attrs({}, patient.attrs))
    if new_id is not None:
        return new_id
    row = repo.patient(patient.key)
    assert row is not None
    while row.merged_into is not None:
        row = repo.patient_by_id(row.merged_into)
    if patient.attrs:
        repo.update_patient(row.id, merge_attrs(row.attrs, patient.attrs))
    return row.id


def merge_patients(repo: Repo, event: PatientMerge) -> None:
    surviving = upsert_patient(repo, event.surviving)
    prior = repo.patient(event.prior)
    if prior is None or prior.id == surviving:
        return
    repo.move_procedures(prior.id, surviving)
    repo.mark_merged(prior.id, surviving)


def change_patient_id(repo: Repo, event: PatientIdChange) -> None:
    old = repo.patient(event.old)
    new = repo.patient(event.patient.key)
    if old is None or (new is not None and old.merged_into == new.id):
        upsert_patient(repo, event.patient)
        return
    if new is not None and new.id != old.id:
        raise DomainError(
            f"cannot change patient ID {event.old} to {event.patient.key}: a patient with the "
            "new ID already exists (send A40 to merge them)", "PatientID", "conflict")
    repo.update_patient(old.id, merge_attrs(old.attrs, event.patient.attrs), event.patient.key)


def _find_procedure(repo: Repo, event: OrderChange) -> ProcedureRow | None:
    attrs = event.procedure.attrs
    row = repo.procedure_by_uid(event.procedure.study_uid)
    if row is None and (event.procedure.generated_uid or event.action is OrderAction.STATUS):
        row = repo.procedure_by_order(
            str(attrs.get("PlacerOrderNumberImagingServiceRequest", "")),
            str(attrs.get("AccessionNumber", "")))
    return row


def apply_order(repo: Repo, event: OrderChange, cancel_started: bool = False) -> None:
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
        for step in steps:
            if step.status not in FINAL:
                repo.set_step_status(step.id, event.status)
        repo.touch_procedure(row.id, event.control)
        return
    _upsert_order(repo, event, row)


def _upsert_order(repo: Repo, event: OrderChange, row: ProcedureRow | None = None) -> None:
    """Create the requested procedure with its steps, or replace the step set of one."""
    assert event.patient is not None
    patient_fk = upsert_patient(repo, event.patient)
    if row is None:
        proc_fk = repo.insert_procedure(patient_fk, event.procedure.attrs, event.control)
        if proc_fk is not None:
            for new_step in event.procedure.steps:
                repo.insert_step(proc_fk, new_step.attrs, event.status)
            return
        row = repo.procedure_by_uid(event.procedure.study_uid)
        assert row is not None
    attrs = merge_attrs(row.attrs, event.procedure.attrs)
    attrs["StudyInstanceUID"] = row.study_uid
    repo.update_procedure(row.id, patient_fk, attrs, event.control)
    existing = {s.sps_id: s for s in repo.steps(row.id)}
    for new_step in event.procedure.steps:
        current = existing.pop(new_step.sps_id, None)
        if current is None:
            repo.insert_step(row.id, new_step.attrs, event.status)
        else:
            keep = current.status in PERFORMED or current.status in FINAL
            status = current.status if keep else event.status
            repo.update_step(current.id, new_step.attrs, status)
    for left_out in existing.values():
        if left_out.status in PERFORMED or left_out.status in FINAL:
            continue
        if event.absent_steps == "delete":
            repo.delete_step(left_out.id)
        else:
            repo.set_step_status(left_out.id, StepStatus.CANCELED)
