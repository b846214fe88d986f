"""The MPPS SCP's DIMSE handlers (PS3.4 Annex F): decode an N-CREATE or N-SET, hand it to
the MPPS-in flow, answer with its status; each request logged and counted.

Runs in pynetdicom's association threads; the flow waits for its store job.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom.events import Event

from broker.dicom.fastjson import to_json
from broker.dicom.status import SUCCESS, failure_of
from broker.flows.mpps_in import MppsIn
from broker.logs import event
from broker.model.errors import DomainError

if TYPE_CHECKING:
    from broker.metrics import Metrics

log = logging.getLogger("broker.dicom")


class MppsScp:
    def __init__(self, flow: MppsIn, metrics: Metrics | None = None) -> None:
        self.flow = flow
        self.metrics = metrics

    def on_n_create(self, ev: Event) -> tuple[Any, Any]:
        started = time.perf_counter()
        calling = ev.assoc.requestor.ae_title.strip()
        request: Any = ev.request
        requested = request.AffectedSOPInstanceUID
        uid = str(requested) if requested else generate_uid()
        try:
            stored = json_of(ev, request.AttributeList, "attribute_list")
            outcome = self.flow.create(uid, stored, calling)
        except DomainError as exc:
            return self._refused(exc, uid, calling, "N-CREATE"), None
        self._count("replayed" if outcome.replayed else outcome.status)
        event(log, "mpps_created", logging.WARNING if outcome.unscheduled else logging.INFO,
              sop_instance_uid=uid, calling_ae=calling, status=outcome.status,
              steps=len(outcome.steps), unscheduled=outcome.unscheduled, queued=outcome.queued,
              replayed=outcome.replayed, ms=round((time.perf_counter() - started) * 1000, 2))
        if requested:
            return SUCCESS, None  # the attribute list is optional in the response (F.7.2.1)
        assigned = Dataset()
        assigned.AffectedSOPInstanceUID = uid  # pynetdicom moves it into the response
        return SUCCESS, assigned

    def on_n_set(self, ev: Event) -> tuple[Any, Any]:
        started = time.perf_counter()
        calling = ev.assoc.requestor.ae_title.strip()
        request: Any = ev.request
        uid = str(request.RequestedSOPInstanceUID or "")
        try:
            modifications = json_of(ev, request.ModificationList, "modification_list")
            outcome = self.flow.update(uid, modifications)
        except DomainError as exc:
            return self._refused(exc, uid, calling, "N-SET"), None
        self._count("replayed" if outcome.replayed else outcome.status)
        event(log, "mpps_updated", sop_instance_uid=uid, calling_ae=calling,
              status=outcome.status, steps=len(outcome.steps), queued=outcome.queued,
              replayed=outcome.replayed, ms=round((time.perf_counter() - started) * 1000, 2))
        return SUCCESS, None

    def _refused(self, error: DomainError, uid: str, calling: str, operation: str) -> Dataset:
        failure = failure_of(error)
        event(log, "mpps_refused", logging.WARNING, sop_instance_uid=uid, calling_ae=calling,
              operation=operation, status=f"0x{failure.status:04X}", error=error.message)
        self._count("refused")
        return failure.dataset()

    def _count(self, status: str) -> None:
        if self.metrics is not None:
            self.metrics.performed_step(status)


def json_of(ev: Event, encoded: Any, attribute: str) -> dict[str, Any]:
    """A request's dataset as DICOM JSON: straight from its encoding when it is little
    endian, else (and for what the fast converter leaves to it) through pydicom."""
    syntax = ev.context.transfer_syntax
    if encoded is not None and syntax.is_little_endian:
        fast = to_json(encoded.getvalue(), syntax.is_implicit_VR)
        if fast is not None:
            return fast
    dataset: Dataset = getattr(ev, attribute)
    return dataset.to_json_dict()
