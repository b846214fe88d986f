"""Performed procedure steps: linking them to scheduled steps and moving those steps on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from broker.model.orders import StepStatus
from broker.store.repo import MppsRepo

IN_PROGRESS, COMPLETED, DISCONTINUED = "IN PROGRESS", "COMPLETED", "DISCONTINUED"
PPS_STATUSES = (IN_PROGRESS, COMPLETED, DISCONTINUED)
FINAL_PPS = frozenset({COMPLETED, DISCONTINUED})
STEP_STATUS = {IN_PROGRESS: StepStatus.STARTED, COMPLETED: StepStatus.COMPLETED,
               DISCONTINUED: StepStatus.DISCONTINUED}


class MppsError(Exception):
    """A request the MPPS SCP refuses: the DIMSE status, a comment and an optional Error ID."""

    def __init__(self, status: int, comment: str, error_id: int | None = None) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment
        self.error_id = error_id


@dataclass(frozen=True, slots=True)
class StepReference:
    """One item of the Scheduled Step Attributes Sequence."""

    study_uid: str = ""
    accession: str = ""
    requested_procedure_id: str = ""
    sps_id: str = ""


@dataclass(slots=True)
class Outcome:
    steps: list[int] = field(default_factory=list)
    unscheduled: bool = False
    status: str = ""
    queued: int = 0
    replayed: bool = False  # a retry of a request already applied: nothing was changed


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


#: told of a status change: (connection, step ids, MPPS status, MPPS summary) → queued count
Notify = Callable[[Any, list[int], str, dict[str, Any]], int]


def create(repo: MppsRepo, sop_instance_uid: str, status: str, dataset: dict[str, Any],
           summary: dict[str, Any], calling_ae: str, refs: list[StepReference],
           match_accession: bool, notify: Notify | None = None) -> Outcome:
    """Store a new MPPS; the same N-CREATE again (same content, e.g. resent after a timeout
    whose job committed late) is answered as done, other content under its UID is 0111."""
    row = repo.mpps(sop_instance_uid)
    if row is not None:
        if row.status == status and row.dataset == dataset:
            return Outcome(repo.linked_steps(row.id), row.unscheduled, status, replayed=True)
        raise MppsError(0x0111, f"an MPPS with SOP Instance UID {sop_instance_uid} exists")
    steps = resolve(repo, refs, match_accession)
    pk = repo.insert_mpps(sop_instance_uid, status, dataset, calling_ae, not steps)
    repo.link(pk, steps)
    _move_steps(repo, steps, status)
    queued = notify(repo.conn, steps, status, summary) if notify else 0
    return Outcome(steps, not steps, status, queued)


#: told when an MPPS becomes final: (connection, MPPS key, SOP Instance UID, status, summary,
#: step ids) → queued count
Final = Callable[[Any, int, str, str, dict[str, Any], list[int]], int]

#: the stored dataset → (new dataset, its status, its summary for messages)
Merge = Callable[[dict[str, Any]], tuple[dict[str, Any], str, dict[str, Any]]]


def update(repo: MppsRepo, sop_instance_uid: str, merge: Merge,
           notify: Notify | None = None, final: Final | None = None) -> Outcome:
    """Apply an N-SET: ``merge`` turns the stored dataset into the new one and its status.

    An N-SET that changes nothing (the same one again, e.g. resent after a timeout whose job
    committed late) is answered as done, also on a final MPPS; any other N-SET on a final
    MPPS is 0110 "may no longer be updated"."""
    row = repo.mpps(sop_instance_uid)
    if row is None:
        raise MppsError(0x0112, f"no MPPS with SOP Instance UID {sop_instance_uid}")
    try:
        dataset, status, summary = merge(row.dataset)
    except MppsError:
        if row.status in FINAL_PPS:
            raise _no_longer_updated(row.status) from None
        raise
    if status == row.status and dataset == row.dataset:
        return Outcome(repo.linked_steps(row.id), row.unscheduled, status, replayed=True)
    if row.status in FINAL_PPS:
        raise _no_longer_updated(row.status)
    repo.update_mpps(row.id, status, dataset)
    steps = repo.linked_steps(row.id)
    queued = 0
    if status != row.status:
        _move_steps(repo, steps, status)
        queued = notify(repo.conn, steps, status, summary) if notify else 0
        if final is not None and status in FINAL_PPS:
            queued += final(repo.conn, row.id, sop_instance_uid, status, summary, steps)
    return Outcome(steps, row.unscheduled, status, queued)


def _no_longer_updated(status: str) -> MppsError:
    return MppsError(0x0110, f"the MPPS is {status} and may no longer be updated",
                     error_id=0xA710)


def _move_steps(repo: MppsRepo, steps: list[int], status: str) -> None:
    target = STEP_STATUS[status]
    for step, current in repo.step_statuses(steps).items():
        if current is not target:
            repo.set_step_status(step, target)
