"""The archive's reports, served on the broker's AE: storage commitment reports
(N-EVENT-REPORT, on the broker's own request association or on a new one the archive opens)
and Instance Availability Notifications (N-CREATE). DIMSE glue: decode, hand to the
completion flow, answer with its status."""

from __future__ import annotations

import logging
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from broker.dicom import ian as ian_checks
from broker.dicom.status import (
    PROCESSING_FAILURE,
    SUCCESS,
    DimseFailure,
    attempt,
    failure_of,
)
from broker.dicom.stgcmt import parse_report, report_status
from broker.flows.completion import CompletionFlow
from broker.logs import event
from broker.model.errors import DomainError, ErrorKind

log = logging.getLogger("broker.dicom")
IAN_SOP_CLASS = "1.2.840.10008.5.1.4.33"


class ArchiveReports:
    def __init__(self, flow: CompletionFlow) -> None:
        self.flow = flow
        self.reports = 0
        self.notifications = 0

    # -- storage commitment report -------------------------------------------------------------
    def report(self, event_type: int, info: Dataset | None, calling_ae: str) -> tuple[int, str]:
        """Record an N-EVENT-REPORT; (status, error comment) to answer."""
        # a refused report, or an Event Information pydicom cannot decode
        with attempt(PROCESSING_FAILURE, "event information cannot be read") as parsing:
            report = parse_report(event_type, info)
        if parsing.failure is not None:
            return parsing.failure.status, parsing.failure.comment
        try:
            known = self.flow.report(report.transaction_uid, report.committed, report.failed)
        except DomainError as exc:
            failure = failure_of(exc)
            return failure.status, failure.comment
        if not known:
            event(log, "stgcmt_report_unknown", logging.WARNING, calling_ae=calling_ae,
                  transaction_uid=report.transaction_uid)
            return PROCESSING_FAILURE, f"unknown Transaction UID {report.transaction_uid}"[:64]
        self.reports += 1
        return SUCCESS, ""

    def on_n_event_report(self, ev: Any) -> tuple[Any, Any]:
        calling = ev.assoc.requestor.ae_title.strip()
        try:
            info = ev.event_information
        except Exception as exc:
            return report_status(PROCESSING_FAILURE, f"event information cannot be read: {exc}")
        return report_status(*self.report(int(ev.event_type), info, calling))

    # -- instance availability notification ----------------------------------------------------
    def on_ian(self, ev: Any) -> tuple[Any, Any]:
        calling = ev.assoc.requestor.ae_title.strip()
        requested = ev.request.AffectedSOPInstanceUID
        uid = str(requested) if requested else generate_uid()
        try:
            notification = ian_checks.parse(ev.attribute_list)
            stored = ev.attribute_list.to_json_dict()
            queued = self.flow.availability(uid, calling, notification, stored)
        except DimseFailure as exc:
            event(log, "ian_refused", logging.WARNING, sop_instance_uid=uid, calling_ae=calling,
                  status=f"0x{exc.status:04X}", error=exc.comment)
            return exc.dataset(), None
        except DomainError as exc:
            failure = failure_of(exc)
            if exc.kind is not ErrorKind.STORE_UNAVAILABLE:
                event(log, "ian_refused", logging.WARNING, sop_instance_uid=uid,
                      calling_ae=calling, status=f"0x{failure.status:04X}", error=exc.message)
            return failure.dataset(), None
        except Exception as exc:  # a dataset pydicom cannot decode
            failure = DimseFailure(PROCESSING_FAILURE, f"dataset cannot be read: {exc}")
            return failure.dataset(), None
        self.notifications += 1
        event(log, "ian_received", sop_instance_uid=uid, calling_ae=calling,
              study_uid=notification.study_uid, instances=len(notification.instances),
              queued=queued)
        if requested:
            return SUCCESS, None
        assigned = Dataset()
        assigned.AffectedSOPInstanceUID = uid
        return SUCCESS, assigned
