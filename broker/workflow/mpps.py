"""Performed procedure steps: linking them to scheduled steps and moving those steps on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from broker.model.errors import DomainError, ErrorKind
from broker.model.orders import StepStatus
from broker.store.repo import MppsRepo

IN_PROGRESS, COMPLETED, DISCONTINUED = "IN PROGRESS", "COMPLETED", "DISCONTINUED"
PPS_STATUSES = (IN_PROGRESS, COMPLETED, DISCONTINUED)
FINAL_PPS = frozenset({COMPLETED, DISCONTINUED})
STEP_STATUS = {IN_PROGRESS: StepStatus.STARTED, COMPLETED: StepStatus.COMPLETED,
               DISCONTINUED: StepStatus.DISCONTINUED}


@dataclass(frozen=True, slots=True)
class StepReference:
    """One item of the Scheduled Step Attributes Sequence."""

    study_uid: str = ""
    accession: str = ""
    requested_procedure_id: str = ""
    sps_id: str = ""


@dataclass(slots=True)
class Outcome:
    """What an N-CREATE or N-SET did: ``moved`` when the MPPS status changed (its steps
    moved on and the RIS is to be told), ``replayed`` when it was a retry of a request
    already applied (nothing was changed)."""

    mpps_pk: int = 0
    steps: list[int] = field(default_factory=list)
    unscheduled: bool = False
    status: str = ""
    moved: bool = False
    replayed: bool = False
    queued: int = 0


def resolve(repo: MppsRepo, refs: list[StepReference], match_accession: bool) -> list[int]:
    """The scheduled steps an MPPS covers: by Study Instance UID (+ SPS ID), else by
    Accession Number (+ SPS ID) when that matching is enabled."""
    found: list[int] = []
    for ref in refs:
        steps = repo.steps_of_study(ref.study_uid, ref.sps_id) if ref.study_uid else []
        if not steps and match_accession and ref.accession:
            steps = repo.steps_of_accession(ref.accession, ref.sps_id)
        found += [s for s in steps if s not in found]
    return found


def create(repo: MppsRepo, sop_instance_uid: str, status: str, dataset: dict[str, Any],
           calling_ae: str, refs: list[StepReference], match_accession: bool) -> Outcome:
    """Store a new MPPS; the same N-CREATE again (same content, e.g. resent after a timeout
    whose job committed late) is answered as done, other content under its UID is a
    DUPLICATE."""
    row = repo.mpps(sop_instance_uid)
    if row is not None:
        if row.status == status and row.dataset == dataset:
            return Outcome(row.id, repo.linked_steps(row.id), row.unscheduled, status,
                           replayed=True)
        raise DomainError(ErrorKind.DUPLICATE,
                          f"an MPPS with SOP Instance UID {sop_instance_uid} exists")
    steps = resolve(repo, refs, match_accession)
    pk = repo.insert_mpps(sop_instance_uid, status, dataset, calling_ae, not steps)
    repo.link(pk, steps)
    _move_steps(repo, steps, status)
    return Outcome(pk, steps, not steps, status, moved=True)


#: the stored dataset → (new dataset, its status, its summary for messages)
Merge = Callable[[dict[str, Any]], tuple[dict[str, Any], str, dict[str, Any]]]


def update(repo: MppsRepo, sop_instance_uid: str,
           merge: Merge) -> tuple[Outcome, dict[str, Any]]:
    """Apply an N-SET: ``merge`` turns the stored dataset into the new one, its status and
    its summary; returns the outcome and that summary.

    An N-SET that changes nothing (the same one again, e.g. resent after a timeout whose job
    committed late) is answered as done, also on a final MPPS; any other N-SET on a final
    MPPS is NO_LONGER_UPDATABLE."""
    row = repo.mpps(sop_instance_uid)
    if row is None:
        raise DomainError(ErrorKind.NOT_FOUND, f"no MPPS with SOP Instance UID {sop_instance_uid}")
    try:
        dataset, status, summary = merge(row.dataset)
    except DomainError:
        if row.status in FINAL_PPS:
            raise _no_longer_updated(row.status) from None
        raise
    if status == row.status and dataset == row.dataset:
        return Outcome(row.id, repo.linked_steps(row.id), row.unscheduled, status,
                       replayed=True), summary
    if row.status in FINAL_PPS:
        raise _no_longer_updated(row.status)
    repo.update_mpps(row.id, status, dataset)
    steps = repo.linked_steps(row.id)
    moved = status != row.status
    if moved:
        _move_steps(repo, steps, status)
    return Outcome(row.id, steps, row.unscheduled, status, moved=moved), summary


def _no_longer_updated(status: str) -> DomainError:
    return DomainError(ErrorKind.NO_LONGER_UPDATABLE,
                       f"the MPPS is {status} and may no longer be updated")


def _move_steps(repo: MppsRepo, steps: list[int], status: str) -> None:
    target = STEP_STATUS[status]
    for step, current in repo.step_statuses(steps).items():
        if current is not target:
            repo.set_step_status(step, target)
