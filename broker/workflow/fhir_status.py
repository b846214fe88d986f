"""What a FHIR server is told of a step's progress: a Task per step change (MPPS or UPS)
and an ImagingStudy per completion notice, queued in the outbox in the transaction of the
change (ordered per study: the Tasks of a study, then its ImagingStudy).

Only orders that came in over FHIR (a ServiceRequest in ``fhir_resources``) are reported,
unless ``all_orders``: then HL7 and upstream orders too, by logical references. A resource
that fails validation is logged as an error and not queued."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from broker.hl7.ack import new_control_id
from broker.logs import event
from broker.model.instances import Facts
from broker.store.unit_of_work import UnitOfWork
from broker.workflow import fhir_build as build

log = logging.getLogger("broker.fhir_status")
TASK_TYPE = "FHIR Task"
STUDY_TYPE = "FHIR ImagingStudy"
#: the ImagingStudy.status of a completion notice's state
STUDY_STATUS = {"complete": "available", "partial": "available",
                "commitment_failed": "registered"}


@dataclass
class FhirStatus:
    """Queues the FHIR resources for the outbox destination ``destination``."""

    destination: str
    all_orders: bool = False
    #: the archive's WADO-RS base URL, and host:port of retrieve AEs (ImagingStudy.endpoint)
    wado_rs_url: str = ""
    dimse_addresses: dict[str, str] = field(default_factory=dict)

    def step_changed(self, uow: UnitOfWork, steps: list[int], status: str,
                     summary: dict[str, Any]) -> int:
        """Queue a Task per step whose performed status became ``status``; returns how
        many were queued."""
        if status not in build.TASK_STATUS:
            return 0
        queued = 0
        for step in steps:
            patient, procedure, step_attrs = uow.mpps.step_context(step)
            study = str(procedure.get("StudyInstanceUID", ""))
            link = uow.fhir_links.service_request(study)
            if link is None and not self.all_orders:
                continue
            focus = build.service_request_ref(link.id if link else "", procedure)
            resource = build.task(
                study_uid=study, sps_id=str(step_attrs.get("ScheduledProcedureStepID")
                                            or f"step-{step}"),
                status=status, summary=summary, focus=focus,
                subject=build.patient_ref(link.subject if link else {}, patient),
                step=step_attrs, now=uow.now)
            queued += self._queue(uow, study, TASK_TYPE, resource)
        return queued

    def completed(self, uow: UnitOfWork, steps: list[int], mpps: dict[str, Any],
                  facts: Facts, state: str) -> int:
        """Queue the ImagingStudy of each study of ``steps`` whose completion notice is in
        ``state`` (complete, partial, commitment_failed)."""
        seen: set[str] = set()
        queued = 0
        for step in steps:
            patient, procedure, step_attrs = uow.mpps.step_context(step)
            study = str(procedure.get("StudyInstanceUID", ""))
            if not study or study in seen:
                continue
            seen.add(study)
            link = uow.fhir_links.service_request(study)
            if link is None and not self.all_orders:
                continue
            resource = build.imaging_study(
                study_uid=study, status=STUDY_STATUS.get(state, "unknown"), summary=mpps,
                based_on=build.service_request_ref(link.id if link else "", procedure),
                subject=build.patient_ref(link.subject if link else {}, patient),
                modality=str(step_attrs.get("Modality") or ""),
                series_count=facts.series, instance_count=facts.instances,
                endpoint=build.endpoints(self.wado_rs_url, facts.retrieve_aes,
                                         self.dimse_addresses))
            queued += self._queue(uow, study, STUDY_TYPE, resource)
        return queued

    def _queue(self, uow: UnitOfWork, study: str, kind: str, resource: dict[str, Any]) -> int:
        problem = build.validate(resource)
        if problem:
            event(log, "fhir_resource_invalid", logging.ERROR, resource=kind,
                  study_uid=study, error=problem)
            return 0
        payload = json.dumps({"method": "PUT",
                              "path": f"{resource['resourceType']}/{resource['id']}",
                              "resource": resource}, separators=(",", ":"))
        uow.outbox.enqueue(self.destination, study, new_control_id(), kind, payload)
        return 1
