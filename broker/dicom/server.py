"""The broker's DICOM AE: Verification and Modality Worklist FIND served here; MPPS
(broker.dicom.mpps_scp), storage commitment reports and IAN (broker.dicom.archive_reports)
handed to their handlers.

pynetdicom runs each association in its own thread; handlers read through a connection of
their own thread (never the writer's) and never touch the asyncio loop.
"""

from __future__ import annotations

import io
import itertools
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    InstanceAvailabilityNotification,
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    StorageCommitmentPushModel,
    UnifiedProcedureStepPull,
    UnifiedProcedureStepPush,
    UnifiedProcedureStepQuery,
    UnifiedProcedureStepWatch,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from broker.audit.trail import AuditTrail, DisabledAuditTrail
from broker.dicom import pynetdicom_patches
from broker.dicom.acceptor import AdmittedRequestHandler, NoDelayServer
from broker.dicom.admission import Admission
from broker.dicom.archive_reports import IAN_SOP_CLASS, ArchiveReports
from broker.dicom.find_responses import find_response
from broker.dicom.mpps_scp import MppsScp
from broker.dicom.mwl import ParsedQuery, QueryLimitError
from broker.dicom.pynetdicom_patches.message_bound import DEFAULT_MAX_MESSAGE_BYTES
from broker.dicom.status import (
    CANCEL,
    IDENTIFIER_DOES_NOT_MATCH,
    PENDING,
    PENDING_WARNING,
    PROCESSING_FAILURE,
    SUCCESS,
    UNABLE_TO_PROCESS_STORE,
    DimseFailure,
    status_dataset,
)
from broker.dicom.worklist_matching import WorklistMatching
from broker.logs import event, without_values
from broker.net.allow import AddressAllowList
from broker.net.peer_limits import PerAddressLimit
from broker.store.errors import StoreError
from broker.store.ports import WorklistReader
from broker.store.query_log import QueryRecord

if TYPE_CHECKING:
    from broker.dicom.ups_scp import UpsScp
    from broker.flows.mpps_in import MppsIn
    from broker.metrics import Metrics

log = logging.getLogger("broker.dicom")

#: the UPS SOP Classes (a request names UPS Push whatever context carries it)
UPS_CLASSES = frozenset({"1.2.840.10008.5.1.4.34.6.1", "1.2.840.10008.5.1.4.34.6.2",
                         "1.2.840.10008.5.1.4.34.6.3", "1.2.840.10008.5.1.4.34.6.5"})
#: worklist answers built per turn of a query (between turns other queries and HL7 run)
QUERY_CHUNK = 32


class DicomServer:
    def __init__(self, worklist_reader: Callable[[], WorklistReader], *, ae_title: str,
                 host: str, port: int,
                 max_associations: int = 128, calling_aes: list[str] | None = None,
                 matching: WorklistMatching | None = None, fast_path: bool = True,
                 ssl_context: ssl.SSLContext | None = None, handshake_timeout: float = 10.0,
                 allowed_addresses: AddressAllowList | None = None,
                 max_concurrent_queries: int = 4,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 max_associations_per_address: int = 32,
                 negotiation_timeout: float = 10.0,
                 mpps: MppsIn | None = None, archive_reports: ArchiveReports | None = None,
                 metrics: Metrics | None = None,
                 query_log: Callable[[QueryRecord], None] | None = None,
                 ups: UpsScp | None = None,
                 audit: AuditTrail | None = None) -> None:
        """``mpps`` serves MPPS, ``archive_reports`` storage commitment reports and IAN
        (each context is offered only when given); ``query_log`` is given a record of each
        worklist C-FIND (from the association's thread: it must not block)."""
        self.worklist_reader = worklist_reader
        self.ae_title, self.host, self.port = ae_title, host, port
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        self.allowed_addresses = allowed_addresses
        self.max_message_bytes = max_message_bytes
        self.per_address = PerAddressLimit(max_associations_per_address)
        self.negotiation_timeout = negotiation_timeout
        self.matching = matching or WorklistMatching()
        self.mpps = MppsScp(mpps, metrics) if mpps is not None else None
        self.archive_reports = archive_reports
        # pre-encoded answers need the speed-ups, which the application installs at start
        self.fast = fast_path and pynetdicom_patches.fast_path_on()
        self.ae = AE(ae_title=ae_title)
        self.ae.maximum_associations = max_associations
        self.ae.require_called_aet = True
        if calling_aes:
            self.ae.require_calling_aet = calling_aes
        self.ae.network_timeout = 60
        self.ae.acse_timeout = negotiation_timeout  # the wait for the A-ASSOCIATE-RQ, ARTIM
        self.ae.dimse_timeout = 60
        served = [ModalityWorklistInformationFind, Verification]
        if mpps is not None:
            served.append(ModalityPerformedProcedureStep)
        if archive_reports is not None:
            served.append(InstanceAvailabilityNotification)
        if ups is not None:
            served += [UnifiedProcedureStepPush, UnifiedProcedureStepPull,
                       UnifiedProcedureStepWatch, UnifiedProcedureStepQuery]
        for sop_class in served:
            self.ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        if archive_reports is not None:  # the archive's reports on an association it opens
            self.ae.add_supported_context(StorageCommitmentPushModel, ALL_TRANSFER_SYNTAXES,
                                          scu_role=False, scp_role=True)
        self._server: ThreadedAssociationServer | None = None
        self._thread: threading.Thread | None = None
        self._local = threading.local()
        self.queries = 0
        self._query_slots = threading.BoundedSemaphore(max(1, max_concurrent_queries))
        self.metrics = metrics
        self.query_log = query_log
        self.ups = ups
        self.audit = audit or DisabledAuditTrail()

    @property
    def bound_port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def serving(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._server is not None

    @property
    def active_associations(self) -> int:
        server = self._server
        return len(server.active_associations) if server is not None else 0

    def start(self) -> None:
        handlers: list[Any] = [(evt.EVT_C_FIND, self._on_find), (evt.EVT_C_ECHO, self._on_echo),
                               (evt.EVT_REJECTED, self._on_rejected),
                               (evt.EVT_N_CREATE, self._on_n_create),
                               (evt.EVT_N_SET, self._on_n_set),
                               (evt.EVT_N_EVENT_REPORT, self._on_n_event_report),
                               (evt.EVT_N_GET, self._on_n_get),
                               (evt.EVT_N_ACTION, self._on_n_action)]
        server = self.ae.make_server((self.host, self.port), evt_handlers=handlers,
                                     server_class=NoDelayServer, ssl_context=self.ssl_context,
                                     request_handler=AdmittedRequestHandler)
        assert isinstance(server, NoDelayServer)
        server.handshake_timeout = self.handshake_timeout
        server.allowed_addresses = self.allowed_addresses
        server.on_refused = self._on_refused
        server.admission = Admission(self.per_address, self.negotiation_timeout)
        server.max_message_bytes = self.max_message_bytes
        server.on_message_too_large = self._on_message_too_large
        self.ae._servers.append(server)  # as AE.start_server does: shutdown() removes it
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.1,),
                                        name="dicom-acceptor", daemon=True)
        self._thread.start()
        event(log, "dicom_listening", ae_title=self.ae_title, host=self.host,
              port=self.bound_port, tls=self.ssl_context is not None)

    def stop(self) -> None:
        if self._server is not None:
            for assoc in self._server.active_associations:
                assoc.abort()
            self._server.shutdown()
            self._server = None
        event(log, "dicom_stopped")

    # -- handlers (association threads) ---------------------------------------------------
    def _reader(self) -> WorklistReader:
        """This association thread's worklist reader (opened on its first query)."""
        reader: WorklistReader | None = getattr(self._local, "reader", None)
        if reader is None:
            reader = self.worklist_reader()
            self._local.reader = reader
        return reader

    def _on_echo(self, ev: Event) -> int:
        return SUCCESS

    def _on_rejected(self, ev: Event) -> None:
        calling = ev.assoc.requestor.ae_title
        allowed = self.ae.require_calling_aet
        reason = ("calling_ae_not_allowed" if allowed and calling.strip() not in allowed
                  else "association_rejected")
        if self.metrics is not None:
            self.metrics.rejected("dicom", reason)
        requestor = ev.assoc.requestor
        event(log, "association_rejected", logging.WARNING, calling_ae=calling,
              peer=f"{requestor.address}:{requestor.port}", reason=reason.replace("_", " "))
        self.audit.security_alert(reason, f"{requestor.address}:{requestor.port}",
                                  f"{calling.strip()} (dicom.allowed_calling_aes)",
                                  listener="dicom", user=calling.strip())

    def _on_message_too_large(self, peer: str, calling_ae: str, received: int,
                              limit: int) -> None:
        """Counted here; pynetdicom_patches.message_bound logged it and aborts the association."""
        if self.metrics is not None:
            self.metrics.rejected("dicom", "message_too_large")

    def _on_refused(self, reason: str, peer: str, detail: str) -> None:
        """A connection closed before any association (address, TLS handshake)."""
        if self.metrics is not None:
            self.metrics.rejected("dicom", reason)
        event(log, "dicom_connection_refused", logging.WARNING, peer=peer, reason=detail)
        self.audit.security_alert(reason, peer, detail, listener="dicom")

    def _on_find(self, ev: Event) -> Iterator[tuple[Any, Any]]:
        if ev.context.abstract_syntax in UPS_CLASSES:
            if self.ups is None:
                yield status_dataset(PROCESSING_FAILURE, "UPS is not served here"), None
                return
            yield from self.ups.on_find(ev)
            return
        started = time.perf_counter()
        calling = ev.assoc.requestor.ae_title
        matches = 0
        step_ids: list[int] = []
        try:
            raw = getattr(ev.request, "Identifier", None)
            parsed = self.matching.parse_encoded(
                raw.getvalue() if isinstance(raw, io.BytesIO) else b"",
                str(ev.context.transfer_syntax), calling, lambda: ev.identifier)
        except QueryLimitError as exc:  # logged with the value's size, never its value
            event(log, "mwl_query_refused", logging.WARNING, calling_ae=calling,
                  status=f"0x{exc.status:04X}", attribute=exc.keyword, count=exc.count,
                  limit=exc.limit, setting=exc.setting)
            if self.metrics is not None:
                self.metrics.rejected("dicom", "query_limit")
            self._count_find("refused", started)
            self._record(ev, started, None, "refused", exc.status, 0, step_ids, exc.comment)
            yield exc.dataset(), None
            return
        except DimseFailure as exc:
            event(log, "mwl_query_refused", logging.WARNING, calling_ae=calling,
                  status=f"0x{exc.status:04X}", error=without_values(exc.comment[:64]))
            self._count_find("refused", started)
            self._record(ev, started, None, "refused", exc.status, 0, step_ids, exc.comment)
            yield exc.dataset(), None
            return
        except Exception as exc:  # an identifier pydicom cannot decode
            event(log, "mwl_query_refused", logging.WARNING, calling_ae=calling,
                  status=f"0x{IDENTIFIER_DOES_NOT_MATCH:04X}", error=without_values(str(exc)))
            self._count_find("refused", started)
            comment = f"identifier cannot be read: {exc}"
            self._record(ev, started, None, "refused", IDENTIFIER_DOES_NOT_MATCH, 0, step_ids,
                         comment)
            yield status_dataset(IDENTIFIER_DOES_NOT_MATCH, comment), None
            return
        status = PENDING_WARNING if parsed.unsupported else PENDING
        encode_name = self.matching.encode_name(calling)
        syntax = ev.context.transfer_syntax
        implicit = syntax == ImplicitVRLittleEndian
        pre_encode = self.fast and (implicit or syntax == ExplicitVRLittleEndian)
        charset = self.matching.charset(calling)
        try:
            rows = self._reader().search(parsed.query)
            while True:
                # build the answers a chunk at a time, at most `query_slots` queries at once:
                # the asyncio loop (HL7) is not starved by many associations querying
                with self._query_slots:
                    chunk = []
                    for row in itertools.islice(rows, QUERY_CHUNK):
                        step_ids.append(row.step_id)
                        chunk.append(find_response(self.matching.responses, row, parsed,
                                                   encode_name, charset,
                                                   implicit if pre_encode else None))
                if not chunk:
                    break
                for answer in chunk:
                    if ev.is_cancelled:
                        self._log_query(calling, parsed, matches, started, "cancelled")
                        self._count_find("cancelled", started)
                        self._record(ev, started, parsed, "cancelled", CANCEL, matches,
                                     step_ids[:matches])
                        yield CANCEL, None
                        return
                    matches += 1
                    yield status, answer
        except StoreError as exc:
            event(log, "mwl_query_failed", logging.ERROR, calling_ae=calling, error=str(exc))
            self._count_find("failed", started)
            comment = f"worklist store unavailable: {exc}"
            self._record(ev, started, parsed, "failed", UNABLE_TO_PROCESS_STORE, matches,
                         step_ids[:matches], comment)
            yield status_dataset(UNABLE_TO_PROCESS_STORE, comment), None
            return
        self.queries += 1
        self._log_query(calling, parsed, matches, started, "done")
        self._count_find("done", started)
        self._record(ev, started, parsed, "done", SUCCESS, matches, step_ids)
        yield SUCCESS, None

    def _on_n_event_report(self, ev: Event) -> tuple[Any, Any]:
        if self.archive_reports is None:
            return status_dataset(PROCESSING_FAILURE,
                                  "storage commitment reports are not taken here"), None
        return self.archive_reports.on_n_event_report(ev)

    def _on_n_create(self, ev: Event) -> tuple[Any, Any]:
        request: Any = ev.request
        if request.AffectedSOPClassUID in UPS_CLASSES:
            if self.ups is None:
                return status_dataset(PROCESSING_FAILURE, "UPS is not served here"), None
            return self.ups.on_n_create(ev)
        if request.AffectedSOPClassUID == IAN_SOP_CLASS:
            if self.archive_reports is None:
                return status_dataset(PROCESSING_FAILURE,
                                      "instance availability is not taken here"), None
            return self.archive_reports.on_ian(ev)
        if self.mpps is None:
            return status_dataset(PROCESSING_FAILURE, "MPPS is not taken here"), None
        return self.mpps.on_n_create(ev)

    def _on_n_set(self, ev: Event) -> tuple[Any, Any]:
        request: Any = ev.request
        if request.RequestedSOPClassUID in UPS_CLASSES:
            if self.ups is None:
                return status_dataset(PROCESSING_FAILURE, "UPS is not served here"), None
            return self.ups.on_n_set(ev)
        if self.mpps is None:
            return status_dataset(PROCESSING_FAILURE, "MPPS is not taken here"), None
        return self.mpps.on_n_set(ev)

    def _record(self, ev: Event, started: float, parsed: ParsedQuery | None, outcome: str,
                status: int, matches: int, step_ids: list[int], error: str = "") -> None:
        """The query log's record of this C-FIND, and its audit message (IHE ATNA Query)."""
        audit = self.audit.enabled
        if self.query_log is None and not audit:
            return
        elapsed = time.perf_counter() - started
        requestor = ev.assoc.requestor
        raw: Any = getattr(ev.request, "Identifier", None)
        identifier = raw.getvalue() if isinstance(raw, io.BytesIO) else b""
        peer = f"{requestor.address}:{requestor.port}"
        if audit:
            self.audit.query(requestor.ae_title, peer, identifier,
                             str(ev.context.abstract_syntax), str(ev.context.transfer_syntax),
                             success=outcome in ("done", "cancelled"))
        if self.query_log is None:
            return
        options = self.matching.options.for_caller(requestor.ae_title)
        self.query_log(QueryRecord(
            queried_at=time.time() - elapsed, calling_ae=requestor.ae_title.strip(),
            called_ae=ev.assoc.acceptor.ae_title.strip(),
            peer=peer, keys=parsed.query.keys() if parsed is not None else {},
            identifier=identifier,
            transfer_syntax=str(ev.context.transfer_syntax), outcome=outcome, status=status,
            matches=matches, ms=round(elapsed * 1000, 3), error=error[:500],
            station_key=requestor.ae_title.strip() if options.station_key else "",
            step_ids=step_ids))

    def _on_n_get(self, ev: Event) -> tuple[Any, Any]:
        if self.ups is None:
            return status_dataset(PROCESSING_FAILURE, "N-GET is served for UPS only"), None
        return self.ups.on_n_get(ev)

    def _on_n_action(self, ev: Event) -> tuple[Any, Any]:
        if self.ups is None:
            return status_dataset(PROCESSING_FAILURE, "N-ACTION is served for UPS only"), None
        return self.ups.on_n_action(ev)

    def _count_find(self, outcome: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.worklist_query(outcome, time.perf_counter() - started)

    @staticmethod
    def _log_query(calling: str, parsed: ParsedQuery, matches: int, started: float,
                   outcome: str) -> None:
        event(log, "mwl_query", calling_ae=calling, outcome=outcome, matches=matches,
              keys=",".join(sorted(parsed.query.keywords())) or "-",
              unsupported=",".join(parsed.unsupported) or "-",
              ms=round((time.perf_counter() - started) * 1000, 2))
