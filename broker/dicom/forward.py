"""Forwarding MPPS N-CREATE / N-SET to downstream MPPS SCPs (an archive, a dose registry),
as an outbox destination: each request is queued with the change it reports and delivered in
order per MPPS, retried while the SCP is unreachable."""

from __future__ import annotations

import json
import ssl
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from broker.dicom.status import (
    ATTRIBUTE_LIST_ERROR,
    ATTRIBUTE_VALUE_OUT_OF_RANGE,
    DUPLICATE_SOP_INSTANCE,
    OPTIONAL_ATTRIBUTES_NOT_SUPPORTED,
    SUCCESS,
)

CREATE, SET = "MPPS N-CREATE", "MPPS N-SET"
#: statuses after which the downstream SCP holds the change (warnings included); 0111 means
#: an N-CREATE it already has (a resend after a lost response)
_KEPT = {SUCCESS, OPTIONAL_ATTRIBUTES_NOT_SUPPORTED, ATTRIBUTE_LIST_ERROR,
         ATTRIBUTE_VALUE_OUT_OF_RANGE}
HELD = {CREATE: _KEPT | {DUPLICATE_SOP_INSTANCE}, SET: _KEPT}


def payload(operation: str, sop_instance_uid: str, dataset: dict[str, Any]) -> str:
    """The outbox payload of one forwarded request (the dataset as DICOM JSON)."""
    return json.dumps({"operation": operation, "sop_instance_uid": sop_instance_uid,
                       "dataset": dataset}, separators=(",", ":"))


class MppsForwarder:
    """Sends one queued request per association (blocking: run it in a worker thread)."""

    def __init__(self, calling_ae: str, ae_title: str, host: str, port: int,
                 timeout: float = 30.0,
                 tls_args: tuple[ssl.SSLContext, str] | None = None) -> None:
        self.calling_ae, self.ae_title = calling_ae, ae_title
        self.host, self.port, self.timeout = host, port, timeout
        self.tls_args = tls_args

    def send(self, operation: str, sop_instance_uid: str, dataset: dict[str, Any]
             ) -> tuple[str, str, str]:
        """(delivered | retry | dead, reason, detail)."""
        ds = Dataset.from_json(dataset)
        ae = AE(ae_title=self.calling_ae)
        ae.add_requested_context(ModalityPerformedProcedureStep)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        try:
            assoc = ae.associate(self.host, self.port, ae_title=self.ae_title,
                                 tls_args=self.tls_args)
        except (OSError, RuntimeError) as exc:
            return "retry", f"cannot reach {self.ae_title}: {exc}", ""
        if not assoc.is_established:
            return "retry", (f"association with {self.ae_title} at {self.host}:{self.port} "
                             "rejected, aborted or not answered"), ""
        try:
            if not assoc.accepted_contexts:
                return "dead", f"{self.ae_title} does not accept MPPS", ""
            if operation == CREATE:
                status, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep,
                                                sop_instance_uid)
            else:
                status, _ = assoc.send_n_set(ds, ModalityPerformedProcedureStep,
                                             sop_instance_uid)
        finally:
            if assoc.is_established:
                assoc.release()
        code = int(status.get("Status", -1)) if status else -1
        if code < 0:
            return "retry", f"no {operation} response from {self.ae_title}", ""
        if code in HELD[operation]:
            return "delivered", "", f"{operation} 0x{code:04X}"
        comment = str(status.get("ErrorComment", "") or "")
        return "dead", (f"{self.ae_title} refused the {operation}: status 0x{code:04X}"
                        + (f" ({comment})" if comment else "")), ""

    def send_row(self, row: Any) -> tuple[str, str, str]:
        request = json.loads(row.payload)
        return self.send(request["operation"], request["sop_instance_uid"], request["dataset"])
