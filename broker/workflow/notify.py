"""What the RIS is told when a performed procedure step moves scheduled steps on, or when a
procedure is complete: one message per requested procedure and destination, queued in the
same transaction as the change that causes it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from broker.hl7.ack import new_control_id
from broker.mapping.outbound import OutboundRule, hl7_timestamp, render
from broker.mapping.specs import MappingSet
from broker.model.instances import Facts
from broker.outbound.encoding import with_charset
from broker.store.unit_of_work import UnitOfWork
from broker.workflow.fhir_status import FhirStatus

EVENT = "procedure_status"
COMPLETION = "completion"


@dataclass
class StatusNotifier:
    mappings: Callable[[], MappingSet]
    destinations: list[str] = field(default_factory=list)
    #: MSH-18 per destination, in place of the template's own (the sender encodes in it)
    charsets: dict[str, str] = field(default_factory=dict)
    #: the FHIR server's Tasks and ImagingStudies (None: no FHIR destination)
    fhir: FhirStatus | None = None

    @property
    def active(self) -> bool:
        """Whether anything is told of completions (an HL7 destination or a FHIR server)."""
        return bool(self.destinations) or self.fhir is not None

    def __call__(self, uow: UnitOfWork, steps: list[int], mpps_status: str,
                 mpps: dict[str, Any]) -> int:
        """Queue the status messages; returns how many. An MPPS status that the rule's
        order_status does not list is not reported to the RIS (the FHIR server gets a Task
        of each IN PROGRESS, COMPLETED and DISCONTINUED)."""
        queued = self.fhir.step_changed(uow, steps, mpps_status, mpps) if self.fhir else 0
        rule = self.mappings().outbound.get(EVENT)
        if rule is None or mpps_status not in rule.order_status:
            return queued
        return queued + self.queue(uow, EVENT, steps, {
            "order_status": rule.order_status[mpps_status], "mpps": mpps})

    def completion(self, uow: UnitOfWork, steps: list[int], mpps: dict[str, Any],
                   facts: Facts, state: str, reason: str) -> int:
        """Queue the completion notices of a procedure in ``state`` (complete, partial,
        commitment_failed), and the FHIR server's ImagingStudy; returns how many."""
        queued = self.fhir.completed(uow, steps, mpps, facts, state) if self.fhir else 0
        rule = self.mappings().outbound.get(COMPLETION)
        if rule is None:
            return queued
        return queued + self.queue(uow, COMPLETION, steps, {
            "mpps": mpps, "completion": completion_context(rule, facts, state, reason),
            "order_status": "CM"})

    def queue(self, uow: UnitOfWork, event_name: str, steps: list[int],
              extra: dict[str, Any]) -> int:
        """Render ``event_name``'s template once per requested procedure of ``steps`` and
        destination, and queue the messages; returns how many."""
        mapping = self.mappings()
        rule = mapping.outbound.get(event_name)
        if rule is None or not self.destinations or not steps:
            return 0
        template = mapping.templates[rule.template]
        repo, outbox = uow.mpps, uow.outbox
        seen: set[str] = set()
        queued = 0
        for step in steps:
            patient, procedure, step_attrs = repo.step_context(step)
            study = str(procedure.get("StudyInstanceUID", ""))
            if study in seen:
                continue
            seen.add(study)
            for destination in self.destinations:
                control_id = new_control_id()
                context = {"now": hl7_timestamp(), "control_id": control_id,
                           "patient": patient, "procedure": procedure, "step": step_attrs,
                           **extra}
                outbox.enqueue(destination, study, control_id, template.message_type,
                               with_charset(render(template, context),
                                            self.charsets.get(destination, "")))
                queued += 1
        return queued


def completion_context(rule: OutboundRule, facts: Facts, state: str,
                       reason: str) -> dict[str, Any]:
    """The ``{completion.X}`` values of a completion notice in ``state``."""
    return {
        "state": state, "result_status": rule.result_status.get(state, ""),
        "partial": "Y" if state == "partial" else "N",
        "series_count": facts.series, "instance_count": facts.instances,
        "committed_count": facts.committed, "failed_count": facts.failed,
        "available_count": facts.available, "retrieve_ae": list(facts.retrieve_aes),
        "reason": reason, "transaction_uid": facts.transaction_uid}
