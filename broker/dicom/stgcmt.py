"""Storage Commitment Push Model, SCU side (PS3.4 Annex J): the N-ACTION request and reading
the archive's N-EVENT-REPORT, which may come on the same association or on a new one."""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from broker.dicom.status import (
    INVALID_ARGUMENT_VALUE,
    NO_SUCH_EVENT_TYPE,
    PROCESSING_FAILURE,
    SUCCESS,
    DimseFailure,
    status_dataset,
)
from broker.logs import event
from broker.model.ports import CommitmentReport
from broker.model.uid import is_uid

log = logging.getLogger("broker.stgcmt")
#: the well-known SOP Instance of the Storage Commitment Push Model
PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"
REQUEST_COMMIT = 1
ALL_COMMITTED, SOME_FAILED = 1, 2


@dataclass(slots=True)
class Report:
    transaction_uid: str
    committed: list[str] = field(default_factory=list)
    failed: dict[str, int] = field(default_factory=dict)


def action_request(transaction_uid: str, instances: list[tuple[str, str]]) -> Dataset:
    """The N-ACTION Action Information: (SOP Class UID, SOP Instance UID) of each instance."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    items = []
    for sop_class, sop_instance in instances:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def _uid_of(item: Any, where: str) -> str:
    if not isinstance(item, Dataset):
        raise DimseFailure(INVALID_ARGUMENT_VALUE, f"{where} is not a dataset")
    uid = str(item.get("ReferencedSOPInstanceUID", "") or "").strip()
    if not is_uid(uid):
        raise DimseFailure(INVALID_ARGUMENT_VALUE, f"{where}: ReferencedSOPInstanceUID "
                           f"(0008,1155) is {'missing' if not uid else 'not a UID'}")
    return uid


def parse_report(event_type: int, info: Dataset | None) -> Report:
    """The archive's verdict per instance (Event Type 1: all committed; 2: some failed)."""
    if event_type not in (ALL_COMMITTED, SOME_FAILED):
        raise DimseFailure(NO_SUCH_EVENT_TYPE, f"Event Type ID {event_type} is not 1 or 2")
    if info is None:
        raise DimseFailure(INVALID_ARGUMENT_VALUE, "the Event Information is missing")
    transaction = str(info.get("TransactionUID", "") or "").strip()
    if not transaction:
        raise DimseFailure(INVALID_ARGUMENT_VALUE, "TransactionUID (0008,1195) is missing")
    report = Report(transaction)
    for n, item in enumerate(info.get("ReferencedSOPSequence") or [], start=1):
        report.committed.append(_uid_of(item, f"ReferencedSOPSequence item {n}"))
    for n, item in enumerate(info.get("FailedSOPSequence") or [], start=1):
        uid = _uid_of(item, f"FailedSOPSequence item {n}")
        reason = item.get("FailureReason")
        report.failed[uid] = int(reason) if reason is not None else PROCESSING_FAILURE
    if event_type == SOME_FAILED and not report.failed:
        raise DimseFailure(INVALID_ARGUMENT_VALUE,
                           "Event Type 2 (failures) without a FailedSOPSequence (0008,1198)")
    if event_type == ALL_COMMITTED and report.failed:
        raise DimseFailure(INVALID_ARGUMENT_VALUE,
                           "Event Type 1 (all committed) with a FailedSOPSequence")
    return report


@dataclass(slots=True)
class Outcome:
    """What became of one N-ACTION: delivered (the archive accepted it), retry or dead."""

    outcome: str
    reason: str = ""
    detail: str = ""


class CommitmentRequester:
    """Sends N-ACTION requests to the archive, one association each, and keeps the association
    open a moment for a report on it (archives that answer at once do so)."""

    def __init__(self, calling_ae: str, archive_ae: str, host: str, port: int, *,
                 timeout: float = 30.0, same_association_wait: float = 2.0,
                 on_report: CommitmentReport | None = None,
                 tls_args: tuple[ssl.SSLContext, str] | None = None) -> None:
        self.calling_ae, self.archive_ae = calling_ae, archive_ae
        #: (context, server name) to reach the archive over TLS; None: plain TCP
        self.tls_args = tls_args
        self.host, self.port = host, port
        self.timeout = timeout
        self.same_association_wait = same_association_wait
        self.on_report = on_report

    def request(self, transaction_uid: str, instances: list[tuple[str, str]]) -> Outcome:
        """Blocking (run it in a worker thread)."""
        ae = AE(ae_title=self.calling_ae)
        ae.add_requested_context(StorageCommitmentPushModel)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        reported = threading.Event()

        def on_report(ev: Any) -> tuple[int | Dataset, None]:
            status, comment = self._report(ev)
            reported.set()
            return report_status(status, comment)

        try:
            assoc = ae.associate(self.host, self.port, ae_title=self.archive_ae,
                                 evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)],
                                 tls_args=self.tls_args)
        except (OSError, RuntimeError) as exc:
            return Outcome("retry", f"cannot reach {self.archive_ae}: {exc}")
        if not assoc.is_established:
            what = "rejected" if assoc.is_rejected else "aborted or not answered"
            return Outcome("retry", f"association with {self.archive_ae} at "
                           f"{self.host}:{self.port} {what}")
        try:
            if not assoc.accepted_contexts:
                return Outcome("dead", f"{self.archive_ae} does not accept the Storage "
                               "Commitment Push Model")
            status, _ = assoc.send_n_action(action_request(transaction_uid, instances),
                                            REQUEST_COMMIT, StorageCommitmentPushModel,
                                            PUSH_MODEL_INSTANCE)
            code = int(status.get("Status", -1)) if status else -1
            if code < 0:
                return Outcome("retry", f"no N-ACTION response from {self.archive_ae}")
            if code != SUCCESS:
                comment = str(status.get("ErrorComment", "") or "")
                return Outcome("dead", f"{self.archive_ae} refused the commitment request: "
                               f"status 0x{code:04X}" + (f" ({comment})" if comment else ""))
            reported.wait(self.same_association_wait)
            return Outcome("delivered", "", "N-ACTION 0x0000"
                           + (", reported on the same association" if reported.is_set() else ""))
        finally:
            if assoc.is_established:
                assoc.release()

    def _report(self, ev: Any) -> tuple[int, str]:
        if self.on_report is None:
            return PROCESSING_FAILURE, "this AE does not take storage commitment reports"
        calling = ev.assoc.acceptor.ae_title.strip()
        return self.on_report(int(ev.event_type), ev.event_information, calling)


def _status(status: int, comment: str) -> tuple[int | Dataset, None]:
    """A handler's answer: the status, with its Error Comment when it is not success."""
    if status == SUCCESS:
        return SUCCESS, None
    return status_dataset(status, comment), None


def report_status(status: int, comment: str) -> tuple[int | Dataset, None]:
    """The N-EVENT-REPORT response for a handler's (status, comment)."""
    if status != 0:
        event(log, "stgcmt_report_refused", logging.WARNING, status=f"0x{status:04X}",
              error=comment)
    return _status(status, comment)
