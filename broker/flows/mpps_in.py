"""MPPS in: an N-CREATE or N-SET of a Modality Performed Procedure Step ─▶ checked ─▶ stored
in one job with what it causes (the scheduled steps moved on, status messages to the RIS,
copies for downstream MPPS SCPs, storage commitment when final) ─▶ its outcome.

A refused request raises a DomainError (the DICOM layer answers it with its status); nothing
of it is stored. The outcome is returned only after the job committed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from broker.audit.records import Remember, record_mpps
from broker.audit.trail import AuditTrail, DisabledAuditTrail
from broker.dicom import mpps as checks
from broker.dicom.forward import CREATE, SET, payload
from broker.hl7.ack import new_control_id
from broker.logs import event
from broker.model.errors import DomainError, ErrorKind
from broker.model.ports import Final, Notify, Queued
from broker.store.errors import StoreError
from broker.store.ports import Writer
from broker.store.unit_of_work import Job, UnitOfWork
from broker.workflow import mpps
from broker.workflow.mpps import FINAL_PPS, Outcome
from broker.workflow.orders import study_lock

log = logging.getLogger("broker.dicom")


class MppsIn:
    """The MPPS SCP's store side. ``notify`` queues the RIS messages of a status change,
    ``final`` is told (in the same job) when an MPPS becomes final, ``forward_to`` names the
    outbox destinations that get a copy of every request; ``store_timeout`` bounds the wait
    for the job (BUSY after it: the job may still commit, and the same request resent is
    then answered as done)."""

    def __init__(self, writer: Writer, *, notify: Notify | None = None,
                 final: Final | None = None, forward_to: Sequence[str] = (),
                 match_accession: bool = True, store_timeout: float = 30.0,
                 on_queued: Queued | None = None, audit: AuditTrail | None = None) -> None:
        self.writer = writer
        self.notify = notify
        self.final = final
        self.forward_to = list(forward_to)
        self.match_accession = match_accession
        self.store_timeout = store_timeout
        self.on_queued = on_queued
        self.audit = audit or DisabledAuditTrail()

    def create(self, uid: str, dataset: dict[str, Any], calling_ae: str) -> Outcome:
        """An N-CREATE (its attribute list as DICOM JSON) under SOP Instance UID ``uid``."""
        status, refs = checks.check_create(dataset)
        summary = checks.summary(dataset, uid)

        def job(uow: UnitOfWork) -> Outcome:
            # brokers sharing one database: one request per MPPS at a time, in turn with the
            # orders of the studies it references
            uow.lock(f"mpps:{uid}", *[study_lock(r.study_uid) for r in refs if r.study_uid])
            outcome = mpps.create(uow.mpps, uid, status, dataset, calling_ae, refs,
                                  self.match_accession)
            if not outcome.replayed:
                outcome.queued = (self._notify(uow, outcome, summary)
                                  + self._forward(uow, CREATE, uid, dataset))
            return outcome
        outcome = self._run(uid, "N-CREATE", job)
        record_mpps(self.audit, True, uid, dataset, outcome.replayed, calling_ae)
        return outcome

    def update(self, uid: str, modifications: dict[str, Any]) -> Outcome:
        """An N-SET (its modification list as DICOM JSON) of the MPPS ``uid``."""
        merge = Remember(checks.merger(modifications, uid))  # keeps the MPPS for the audit

        def job(uow: UnitOfWork) -> Outcome:
            if uow.locks:
                uow.lock(f"mpps:{uid}", *[study_lock(s) for s in uow.mpps.studies_of(uid)])
            outcome, summary = mpps.update(uow.mpps, uid, merge)
            if outcome.replayed:
                return outcome
            if outcome.moved:
                outcome.queued = self._notify(uow, outcome, summary)
                if self.final is not None and outcome.status in FINAL_PPS:
                    outcome.queued += self.final(uow, outcome.mpps_pk, uid, outcome.status,
                                                 summary, outcome.steps)
            outcome.queued += self._forward(uow, SET, uid, modifications)
            return outcome
        outcome = self._run(uid, "N-SET", job)
        record_mpps(self.audit, False, uid, merge.dataset, outcome.replayed)
        return outcome

    def _notify(self, uow: UnitOfWork, outcome: Outcome, summary: dict[str, Any]) -> int:
        if self.notify is None:
            return 0
        return self.notify(uow, outcome.steps, outcome.status, summary)

    def _forward(self, uow: UnitOfWork, operation: str, uid: str,
                 dataset: dict[str, Any]) -> int:
        """Queue a copy of the request for each downstream SCP (ordered per MPPS)."""
        if not self.forward_to:
            return 0
        text = payload(operation, uid, dataset)
        for name in self.forward_to:
            uow.outbox.enqueue(name, uid, new_control_id(), operation, text)
        return len(self.forward_to)

    def _run(self, uid: str, operation: str, job: Job[Outcome]) -> Outcome:
        timeout = self.store_timeout
        try:
            outcome = self.writer.run_sync(job, timeout=timeout)
        except TimeoutError:
            event(log, "mpps_store_timeout", logging.WARNING, sop_instance_uid=uid,
                  operation=operation, timeout=timeout)
            raise DomainError(ErrorKind.BUSY, f"store busy, not done within {timeout:g} s: "
                              "send the same request again") from None
        except StoreError as exc:
            raise DomainError(ErrorKind.STORE_UNAVAILABLE,
                              f"store unavailable: {exc}") from exc
        if outcome.queued and self.on_queued is not None:
            self.on_queued()
        return outcome
