"""Completion after an MPPS is COMPLETED: ask the archive to commit its instances,
take the archive's commitment reports and availability notifications, and send the RIS one
completion notice per procedure when the mapping's completion rule is met (or its timeout).

Every function runs inside the writer's transaction, so what it queues in the outbox is
committed with the change that caused it, and a decided completion is never sent twice."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydicom.uid import generate_uid

from broker.logs import event
from broker.mapping.outbound import OutboundRule
from broker.mapping.specs import MappingSet
from broker.model.instances import Facts, Instance
from broker.model.ports import Summarize
from broker.store.cluster import ALIVE_WINDOW
from broker.store.unit_of_work import UnitOfWork
from broker.workflow.mpps import COMPLETED
from broker.workflow.notify import COMPLETION, StatusNotifier

#: the advisory lock of the storage commitment and completion timers
TIMERS = "timer:completion"
log = logging.getLogger("broker.completion")
ACTION_TYPE = "N-ACTION"


@dataclass
class CompletionPolicy:
    archive: str = ""  # the outbox destination of commitment requests; '' = no commitment
    delay: float = 0.0
    report_timeout: float = 600.0
    available_statuses: tuple[str, ...] = ("ONLINE", "NEARLINE")


class Completion:
    """Storage commitment requests and reports, instance availability and the completion
    rule, on the unit of work of the job they run in."""

    def __init__(self, mappings: Callable[[], MappingSet], notifier: StatusNotifier,
                 policy: CompletionPolicy, summarize: Summarize, node: str = "") -> None:
        """``node``: this broker's name among those sharing the database."""
        self.node = node
        self.mappings = mappings
        self.notifier = notifier
        self.policy = policy
        self.summarize = summarize

    def _rule(self) -> OutboundRule | None:
        return self.mappings().outbound.get(COMPLETION)

    # -- the MPPS is final ---------------------------------------------------------------------
    def mpps_final(self, uow: UnitOfWork, mpps_pk: int, mpps_uid: str, status: str,
                   instances: list[Instance], steps: list[int]) -> int:
        """Record the instances; when COMPLETED, queue the commitment request and start
        waiting for the completion rule. Returns how many outbox rows were queued."""
        repo = uow.completion
        repo.set_mpps_instances(mpps_pk, instances)
        if status != COMPLETED:
            return 0
        queued = 0
        if self.policy.archive and instances:
            transaction = generate_uid()
            due = repo.now + self.policy.delay
            repo.new_commitment(transaction, mpps_pk, self.policy.archive,
                                due + self.policy.report_timeout, instances, self.node)
            self._queue_request(uow, transaction, mpps_uid, instances, due)
            queued += 1
        rule = self._rule()
        # completion notices close the loop with an archive; without one, only a rule that
        # requires nothing (notify at COMPLETED) applies
        applies = bool(self.policy.archive) or (rule is not None and not rule.require)
        if rule is not None and applies and self.notifier.active and steps:
            repo.start_completion(mpps_pk, repo.now + rule.timeout)
            queued += self.evaluate(uow, mpps_pk)
        return queued

    # -- storage commitment --------------------------------------------------------------------
    def _queue_request(self, uow: UnitOfWork, transaction: str, mpps_uid: str,
                       instances: list[Instance], due: float) -> None:
        payload = json.dumps({"transaction_uid": transaction, "mpps": mpps_uid,
                              "instances": [[i.sop_class_uid, i.sop_instance_uid]
                                            for i in instances]})
        uow.outbox.enqueue(self.policy.archive, mpps_uid, transaction, ACTION_TYPE,
                                 payload, due_at=due)

    def recover(self, uow: UnitOfWork) -> int:
        """At start-up: ask again (same Transaction UID) for every commitment the archive
        accepted but did not report on — its report may have come while the broker was down.
        Reports are idempotent, and a decided completion is never sent again. With several
        brokers on one database, only the commitments this broker asked for, or a broker no
        longer alive asked for: a live one still waits for its own reports."""
        uow.lock(TIMERS)
        repo = uow.completion
        live = uow.cluster.live_nodes(ALIVE_WINDOW) - {self.node}
        queued = 0
        for row in repo.unreported_commitments():
            if not self.policy.archive or row.node in live:
                continue
            mpps = repo.mpps_by_pk(row.mpps_fk)
            repo.commitment_asked_again(row.id)
            self._queue_request(uow, row.transaction_uid, mpps.sop_instance_uid if mpps else "",
                                repo.commitment_instances(row.id), repo.now)
            event(log, "stgcmt_requested_again", transaction_uid=row.transaction_uid,
                  archive=row.archive)
            queued += 1
        return queued

    def commitment_sent(self, uow: UnitOfWork, transaction_uid: str, outcome: str,
                        reason: str) -> int:
        """The outbox settled a commitment request: accepted (wait for the report) or
        refused for good (a commitment failure)."""
        repo = uow.completion
        if outcome == "delivered":
            repo.commitment_requested(transaction_uid, self.policy.report_timeout)
            return 0
        if outcome != "dead":
            return 0
        repo.commitment_refused(transaction_uid, reason)
        row = repo.commitment(transaction_uid)
        return self.evaluate(uow, row.mpps_fk) if row else 0

    def record_report(self, uow: UnitOfWork, transaction_uid: str, committed: list[str],
                      failed: dict[str, int]) -> tuple[bool, int]:
        """An N-EVENT-REPORT: (whether the transaction is known, messages queued)."""
        uow.lock(f"commitment:{transaction_uid}")  # sent to any broker: recorded once
        repo = uow.completion
        row = repo.commitment(transaction_uid)
        if row is None:
            return False, 0
        n_committed, n_failed = repo.commitment_reported(row.id, committed, failed)
        event(log, "stgcmt_reported", transaction_uid=transaction_uid, committed=n_committed,
              failed=n_failed, late=row.state == "timed_out")
        return True, self.evaluate(uow, row.mpps_fk)

    # -- instance availability -----------------------------------------------------------------
    def record_availability(self, uow: UnitOfWork, mpps_pks: list[int], instance_uids: list[str]
                            ) -> int:
        repo = uow.completion
        affected = sorted(set(mpps_pks) | set(repo.mpps_of_instances(instance_uids)))
        return sum(self.evaluate(uow, pk) for pk in affected)

    # -- timeouts ------------------------------------------------------------------------------
    def sweep(self, uow: UnitOfWork, now: float | None = None) -> int:
        """Time out commitment transactions with no report and completions past their
        deadline; returns the messages queued. Brokers sharing one database sweep in turn
        (each deadline fires once) on the database's clock."""
        uow.lock(TIMERS)
        repo = uow.at(now if now is not None else uow.cluster.clock()).completion
        queued = 0
        for row in repo.overdue_commitments(repo.now):
            repo.commitment_timed_out(row.id)
            event(log, "stgcmt_timed_out", logging.WARNING, transaction_uid=row.transaction_uid,
                  archive=row.archive)
            queued += self.evaluate(uow, row.mpps_fk, repo.now)
        for pk in repo.overdue_completions(repo.now):
            queued += self.evaluate(uow, pk, repo.now)
        return queued

    # -- the completion rule -------------------------------------------------------------------
    def evaluate(self, uow: UnitOfWork, mpps_pk: int, now: float | None = None) -> int:
        """Send the completion notice if the rule is met, failed, or out of time."""
        repo = uow.at(now).completion
        waiting = repo.completion(mpps_pk)
        rule = self._rule()
        if waiting is None or waiting.state != "waiting" or rule is None:
            return 0
        facts = repo.facts(mpps_pk, self.policy.available_statuses)
        missing = self._missing(rule, facts)
        expired = repo.now >= waiting.deadline or facts.commitment_state == "timed_out"
        mpps = repo.mpps_by_pk(mpps_pk)
        uid = mpps.sop_instance_uid if mpps else str(mpps_pk)
        if facts.commitment_state == "failed":
            state, reason = "commitment_failed", facts.commitment_reason
        elif not missing:
            state, reason = "complete", ""
        elif expired and rule.on_timeout == "send_partial":
            state, reason = "partial", "; ".join(missing)
        elif expired:
            repo.decide_completion(mpps_pk, "problem", "; ".join(missing))
            event(log, "completion_problem", logging.ERROR, sop_instance_uid=uid,
                  missing="; ".join(missing))
            return 0
        else:
            return 0
        queued = self._send(uow, mpps_pk, uid, mpps.dataset if mpps else {}, facts, state,
                            reason)
        repo.decide_completion(mpps_pk, "sent" if state == "complete" else state, reason)
        event(log, "completion_notice", logging.INFO if state == "complete" else logging.WARNING,
              sop_instance_uid=uid, state=state, queued=queued, instances=facts.instances,
              committed=facts.committed, available=facts.available,
              **({"reason": reason} if reason else {}))
        return queued

    def _missing(self, rule: OutboundRule, facts: Facts) -> list[str]:
        missing = []
        wants_commitment = bool(self.policy.archive) or facts.commitment_state != ""
        if "committed" in rule.require and wants_commitment and facts.committed < facts.instances:
            text = f"{facts.instances - facts.committed} of {facts.instances} instance(s) not " \
                   "committed"
            if facts.commitment_state == "timed_out":
                text += " (no commitment report before the timeout)"
            missing.append(text)
        if "available" in rule.require and facts.available < facts.instances:
            missing.append(f"{facts.instances - facts.available} of {facts.instances} "
                           "instance(s) not reported available")
        return missing

    def _send(self, uow: UnitOfWork, mpps_pk: int, uid: str, dataset: dict[str, Any],
              facts: Facts, state: str, reason: str) -> int:
        steps = uow.mpps.linked_steps(mpps_pk)
        return self.notifier.completion(uow, steps, self.summarize(dataset, uid), facts, state,
                                        reason)
