"""Storage commitment, instance availability and completion, as one flow on the store:

MPPS COMPLETED ─▶ commitment request (outbox) ─▶ N-EVENT-REPORT ─▶ store ┐
IAN N-CREATE ─▶ store ───────────────────────────────────────────────────┴▶ completion rule ─▶
outbox ─▶ completion notice to the RIS; a timer sweeps what waited too long, and the start
asks again for the reports the archive owes.

The rule itself is :class:`broker.workflow.completion.Completion`; this module runs it in the
store's jobs and tells the outbox when a job queued messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial
from typing import Any, TypeVar

from broker.dicom.ian import Notification
from broker.logs import event
from broker.model.errors import DomainError, ErrorKind
from broker.model.instances import Instance
from broker.model.ports import Queued
from broker.store.completion import CompletionRepo
from broker.store.errors import StoreError
from broker.store.ports import Writer
from broker.store.repo import OutboxRow
from broker.store.unit_of_work import Job, UnitOfWork
from broker.workflow.completion import ACTION_TYPE, Completion

log = logging.getLogger("broker.completion")
T = TypeVar("T")
#: how long a report or an IAN waits for its store job
STORE_TIMEOUT = 30.0


class CompletionFlow:
    def __init__(self, writer: Writer, completion: Completion, *,
                 on_queued: Queued | None = None, sweep_interval: float = 1.0) -> None:
        self.writer = writer
        self.completion = completion
        self.on_queued = on_queued
        self.sweep_interval = sweep_interval
        self._sweeper: asyncio.Task[None] | None = None

    def _queued(self, count: int) -> None:
        if count and self.on_queued is not None:
            self.on_queued()

    # -- inside other flows' jobs --------------------------------------------------------------
    def mpps_final(self, uow: UnitOfWork, mpps_pk: int, uid: str, status: str,
                   summary: dict[str, Any], steps: list[int]) -> int:
        """An MPPS became final (in the N-SET's job): its instances, the commitment request
        and the wait for the completion rule; returns the messages queued."""
        instances = [Instance(*i) for i in summary.get("instances", [])]
        return self.completion.mpps_final(uow, mpps_pk, uid, status, instances, steps)

    def settled(self, uow: UnitOfWork, row: OutboxRow, outcome: str, reason: str) -> None:
        """The outbox settled an entry (in its settling job): a commitment request accepted
        or refused for good."""
        if row.message_type == ACTION_TYPE:
            self.completion.commitment_sent(uow, row.control_id, outcome, reason)

    # -- from DICOM association threads -------------------------------------------------------
    def report(self, transaction_uid: str, committed: list[str],
               failed: dict[str, int]) -> bool:
        """Store an N-EVENT-REPORT; whether its transaction is known."""
        known, queued = self._run(partial(
            self.completion.record_report, transaction_uid=transaction_uid,
            committed=committed, failed=failed))
        self._queued(queued)
        return bool(known)

    def availability(self, uid: str, calling_ae: str, notification: Notification,
                     dataset: dict[str, Any]) -> int:
        """Store an Instance Availability Notification; returns the messages queued."""
        queued = self._run(partial(self._store_ian, uid=uid, calling_ae=calling_ae,
                                        notification=notification, dataset=dataset))
        self._queued(queued)
        return queued

    def _run(self, job: Job[T]) -> T:
        try:
            return self.writer.run_sync(job, timeout=STORE_TIMEOUT)
        except StoreError as exc:
            raise DomainError(ErrorKind.STORE_UNAVAILABLE, f"store unavailable: {exc}") from exc

    def _store_ian(self, uow: UnitOfWork, uid: str, calling_ae: str,
                   notification: Notification, dataset: dict[str, Any]) -> int:
        repo = uow.completion
        if repo.ian_exists(uid):
            raise DomainError(ErrorKind.DUPLICATE, f"duplicate IAN: SOP Instance UID {uid} was "
                              "received before")
        mpps_pks, procedure, linked_by = _link(repo, notification)
        ian_pk = repo.insert_ian(uid, calling_ae, notification.study_uid,
                                 mpps_pks[0] if mpps_pks else None, procedure, linked_by,
                                 dataset)
        repo.set_availability(ian_pk, notification.study_uid, [
            (Instance(i.sop_instance_uid, i.sop_class_uid, i.series_uid), i.availability,
             i.retrieve_ae) for i in notification.instances])
        return self.completion.record_availability(
            uow, mpps_pks, [i.sop_instance_uid for i in notification.instances])

    # -- recovery and the timer (event loop) ---------------------------------------------------
    async def start(self) -> None:
        """Ask again for the reports the archive owes, then start the timer."""
        await self.writer.run(self.completion.recover)
        self._sweeper = asyncio.create_task(self._sweep(), name="completion-sweep")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def _sweep(self) -> None:
        """Time out commitment reports and completion notices that waited too long."""
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                self._queued(await self.writer.run(self.completion.sweep))
            except Exception as exc:  # the store is down: try again next round
                event(log, "completion_sweep_failed", logging.ERROR, error=str(exc))


def _link(repo: CompletionRepo, notification: Notification
          ) -> tuple[list[int], int | None, str]:
    """The MPPS and procedure an IAN is about: by its Referenced Performed Procedure Step
    Sequence, else its Study Instance UID, else its accession number."""
    by_mpps = [pk for pk in (repo.mpps_pk(u) for u in notification.mpps_uids) if pk is not None]
    procedure = repo.procedure_of("study_uid", notification.study_uid)
    if by_mpps:
        if procedure is None:  # matched by accession under another Study Instance UID
            procedure = repo.procedure_of_mpps(by_mpps[0])
        return by_mpps, procedure, "mpps"
    if procedure is not None:
        return repo.mpps_of_procedure(procedure), procedure, "study"
    if notification.accession:
        procedure = repo.procedure_of("accession", notification.accession)
        if procedure is not None:
            return repo.mpps_of_procedure(procedure), procedure, "accession"
    return [], None, ""
