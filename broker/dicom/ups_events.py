"""UPS event reports to a subscriber: an outbox destination per subscribing AE that sends each
queued report as an N-EVENT-REPORT (UPS Event SOP Class, the broker in the SCP role) on an
association it opens to the subscriber's host and port."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    UnifiedProcedureStepEvent,
    UnifiedProcedureStepPush,
)

from broker.dicom.mwl import nodes_of, to_pydicom
from broker.logs import event
from broker.store.repo import OutboxRow

log = logging.getLogger("broker.ups")
#: seconds an idle association to a subscriber is kept for the next report
KEEP_OPEN = 20.0
#: the outcome of one delivery: (delivered | retry | dead, reason, detail), as the outbox
#: worker's request destinations answer
Outcome = tuple[str, str, str]


class EventReporter:
    """Sends the queued event reports of one subscriber (``send_row`` for the outbox)."""

    def __init__(self, local_ae: str, ae_title: str, host: str, port: int,
                 timeout: float = 30.0, tls_args: tuple[Any, ...] | None = None,
                 charset: str = "ISO_IR 192") -> None:
        self.local_ae, self.ae_title = local_ae, ae_title
        self.host, self.port, self.timeout = host, port, timeout
        self.tls_args = tls_args
        self.charset = charset
        self._lock = threading.Lock()
        self._assoc: Any = None
        self._used = 0.0

    def send_row(self, row: OutboxRow) -> Outcome:
        report = json.loads(row.payload)
        info = to_pydicom(nodes_of([], report["info"]), self.charset)
        return self.send(int(report["event_type"]), report["sop_instance_uid"], info)

    def send(self, event_type: int, uid: str, info: Dataset) -> Outcome:
        """One report, on the association kept from the last one when it is still open
        and younger than ``KEEP_OPEN`` seconds of idleness, else on a new one."""
        with self._lock:
            assoc = self._association()
            if isinstance(assoc, tuple):
                return assoc
            try:
                status, _ = assoc.send_n_event_report(info, event_type,
                                                      UnifiedProcedureStepPush, uid)
            except (OSError, RuntimeError) as exc:
                self._close()
                return "retry", f"sending to {self.ae_title} failed: {exc}", ""
            self._used = time.monotonic()
            if status is None or "Status" not in status:
                self._close()  # the association broke or timed out: a new one next time
                return "retry", f"no N-EVENT-REPORT response from {self.ae_title}", ""
        code = int(status.Status)
        event(log, "ups_event_sent", receiving_ae=self.ae_title, sop_instance_uid=uid,
              event_type=event_type, status=f"0x{code:04X}")
        if code == 0 or 0xB000 <= code <= 0xBFFF:
            return "delivered", "", f"0x{code:04X}"
        comment = str(status.get("ErrorComment", "") or "")
        return "dead", (f"{self.ae_title} refused the event report: status 0x{code:04X}"
                        + (f" ({comment})" if comment else "")), ""

    def _association(self) -> Any:
        """The open association, or (retry | dead, reason, detail) when none can be had."""
        assoc = self._assoc
        if assoc is not None and assoc.is_established and (
                time.monotonic() - self._used < KEEP_OPEN):
            return assoc
        self._close()
        ae = AE(ae_title=self.local_ae)
        ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = self.timeout
        ae.add_requested_context(UnifiedProcedureStepEvent)
        kwargs: dict[str, Any] = {"ae_title": self.ae_title,
                                  "ext_neg": [build_role(UnifiedProcedureStepEvent,
                                                         scp_role=True)]}
        if self.tls_args is not None:
            kwargs["tls_args"] = self.tls_args
        try:
            assoc = ae.associate(self.host, self.port, **kwargs)
        except (OSError, RuntimeError) as exc:
            return "retry", f"cannot reach {self.ae_title}: {exc}", ""
        if not assoc.is_established:
            return "retry", (f"association with {self.ae_title} at {self.host}:{self.port} "
                             "rejected, aborted or not answered"), ""
        if not assoc.accepted_contexts:
            assoc.release()
            return "dead", f"{self.ae_title} does not accept UPS event reports", ""
        self._assoc, self._used = assoc, time.monotonic()
        return assoc

    def _close(self) -> None:
        assoc, self._assoc = self._assoc, None
        if assoc is not None and assoc.is_established:
            assoc.release()

    def close(self) -> None:
        with self._lock:
            self._close()
