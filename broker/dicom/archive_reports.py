"""The DICOM requests that close the loop, served on the broker's AE: storage commitment
reports (N-EVENT-REPORT, on the broker's own request association or on a new one the archive
opens) and Instance Availability Notifications (N-CREATE)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from broker.dicom import ian as ian_checks
from broker.dicom.dataset import status_dataset
from broker.dicom.stgcmt import ReportError, parse_report, report_status
from broker.logs import event
from broker.store.completion import ClosureRepo, Instance
from broker.store.writer import StoreError, Writer
from broker.workflow.completion import Closure

log = logging.getLogger("broker.dicom")
IAN_SOP_CLASS = "1.2.840.10008.5.1.4.33"


class ClosureScp:
    def __init__(self, writer: Writer, closure: Closure,
                 on_queued: Callable[[], None] | None = None) -> None:
        self.writer = writer
        self.closure = closure
        self.on_queued = on_queued
        self.reports = 0
        self.notifications = 0

    def _queued(self, count: int) -> None:
        if count and self.on_queued is not None:
            self.on_queued()

    # -- storage commitment report -------------------------------------------------------------
    def report(self, event_type: int, info: Dataset | None, calling_ae: str) -> tuple[int, str]:
        """Record an N-EVENT-REPORT; (status, error comment) to answer."""
        try:
            report = parse_report(event_type, info)
        except ReportError as exc:
            return exc.status, exc.comment
        except Exception as exc:  # an Event Information pydicom cannot decode
            return 0x0110, f"event information cannot be read: {exc}"
        try:
            known, queued = self.writer.run_sync(partial(
                self.closure.record_report, transaction_uid=report.transaction_uid,
                committed=report.committed, failed=report.failed), timeout=30)
        except StoreError as exc:
            return 0x0110, f"store unavailable: {exc}"
        if not known:
            event(log, "stgcmt_report_unknown", logging.WARNING, calling_ae=calling_ae,
                  transaction_uid=report.transaction_uid)
            return 0x0110, f"unknown Transaction UID {report.transaction_uid}"[:64]
        self.reports += 1
        self._queued(queued)
        return 0x0000, ""

    def on_n_event_report(self, ev: Any) -> tuple[Any, Any]:
        calling = ev.assoc.requestor.ae_title.strip()
        try:
            info = ev.event_information
        except Exception as exc:
            return report_status(0x0110, f"event information cannot be read: {exc}")
        return report_status(*self.report(int(ev.event_type), info, calling))

    # -- instance availability notification ----------------------------------------------------
    def on_ian(self, ev: Any) -> tuple[Any, Any]:
        calling = ev.assoc.requestor.ae_title.strip()
        requested = ev.request.AffectedSOPInstanceUID
        uid = str(requested) if requested else generate_uid()
        try:
            notification = ian_checks.parse(ev.attribute_list)
            stored = ev.attribute_list.to_json_dict()
            queued = self.writer.run_sync(partial(
                self._store_ian, uid=uid, calling_ae=calling, notification=notification,
                dataset=stored), timeout=30)
        except ian_checks.IanError as exc:
            event(log, "ian_refused", logging.WARNING, sop_instance_uid=uid, calling_ae=calling,
                  status=f"0x{exc.status:04X}", error=exc.comment)
            return status_dataset(exc.status, exc.comment), None
        except StoreError as exc:
            return status_dataset(0x0110, f"store unavailable: {exc}"), None
        except Exception as exc:  # a dataset pydicom cannot decode
            return status_dataset(0x0110, f"dataset cannot be read: {exc}"), None
        self.notifications += 1
        self._queued(queued)
        event(log, "ian_received", sop_instance_uid=uid, calling_ae=calling,
              study_uid=notification.study_uid, instances=len(notification.instances),
              queued=queued)
        if requested:
            return 0x0000, None
        assigned = Dataset()
        assigned.AffectedSOPInstanceUID = uid
        return 0x0000, assigned

    def _store_ian(self, conn: Any, uid: str, calling_ae: str,
                   notification: ian_checks.Notification, dataset: dict[str, Any]) -> int:
        repo = ClosureRepo(conn)
        if repo.ian_exists(uid):
            raise ian_checks.IanError(0x0111, f"duplicate IAN: SOP Instance UID {uid} was "
                                      "received before")
        mpps_pks, procedure, linked_by = self._link(repo, notification)
        ian_pk = repo.insert_ian(uid, calling_ae, notification.study_uid,
                                 mpps_pks[0] if mpps_pks else None, procedure, linked_by,
                                 dataset)
        repo.set_availability(ian_pk, notification.study_uid, [
            (Instance(i.sop_instance_uid, i.sop_class_uid, i.series_uid), i.availability,
             i.retrieve_ae) for i in notification.instances])
        return self.closure.record_availability(
            conn, mpps_pks, [i.sop_instance_uid for i in notification.instances])

    @staticmethod
    def _link(repo: ClosureRepo, notification: ian_checks.Notification
              ) -> tuple[list[int], int | None, str]:
        """The MPPS and procedure an IAN is about: by its Referenced Performed Procedure Step
        Sequence, else its Study Instance UID, else its accession number."""
        by_mpps = [pk for pk in (repo.mpps_pk(u) for u in notification.mpps_uids)
                   if pk is not None]
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

