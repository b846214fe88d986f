"""The broker's DICOM AE: Verification and Modality Worklist FIND (later MPPS, IAN …).

pynetdicom runs each association in its own thread; handlers read through a connection of
their own thread (never the writer's) and never touch the asyncio loop.
"""

from __future__ import annotations

import itertools
import logging
import socket
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    InstanceAvailabilityNotification,
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    StorageCommitmentPushModel,
    Verification,
)
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from broker.dicom import fastpath, message_guard, pdu_guard
from broker.dicom import mpps as mpps_checks
from broker.dicom.admission import Admission, cut, refuse_busy
from broker.dicom.archive_reports import IAN_SOP_CLASS, ClosureScp
from broker.dicom.dataset import status_dataset
from broker.dicom.encoder import encode
from broker.dicom.fastjson import to_json
from broker.dicom.mwl import (
    ParsedQuery,
    QueryError,
    QueryLimitError,
    QueryLimits,
    parse_identifier,
    response_nodes,
    to_pydicom,
)
from broker.logs import event, without_values
from broker.net.allow import AddressAllowList
from broker.net.peer_limits import PerAddressLimit
from broker.net.tls import handshake_reason
from broker.store.repo import MppsRepo
from broker.store.worklist_query import open_reader, search
from broker.store.writer import StoreError, Writer
from broker.workflow import mpps as mpps_flow

if TYPE_CHECKING:
    from broker.metrics import Metrics

log = logging.getLogger("broker.dicom")

#: worklist answers built per turn of a query (between turns other queries and HL7 run)
QUERY_CHUNK = 32
#: DICOM Specific Character Set → how names that it cannot hold are written
CHARSETS = {"ISO_IR 192": "utf-8", "GB18030": "gb18030", "ISO_IR 100": "latin-1"}


@dataclass
class CallingAeOptions:
    """Per calling AE title: use it as the station key; the response character set."""

    station_key: bool = False
    charset: str = "ISO_IR 192"


@dataclass
class WorklistOptions:
    show_all_statuses: bool = False
    default: CallingAeOptions = field(default_factory=CallingAeOptions)
    callers: dict[str, CallingAeOptions] = field(default_factory=dict)

    def for_caller(self, ae_title: str) -> CallingAeOptions:
        return self.callers.get(ae_title.strip(), self.default)


#: (reason, peer, detail) of a connection refused before any association
Refused = Callable[[str, str, str], None]
_Request = socket.socket | tuple[bytes, socket.socket]


class NoDelayServer(ThreadedAssociationServer):
    """Accepts associations with TCP_NODELAY set, so a response's PDUs are not held back.

    Connections from addresses not on ``allowed_addresses`` are closed at once. With TLS the
    handshake runs in the connection's own thread, bounded by ``handshake_timeout``, so a slow
    or failing client never holds the acceptor up; a failure is reported to ``on_refused``.
    ``admission`` caps the connections of one address (checked at accept, slot given back when
    the association thread ends) and cuts those without a whole A-ASSOCIATE-RQ by their
    deadline (checked by the acceptor between accepts, every poll interval).
    """

    handshake_timeout: float = 10.0
    #: listen backlog (socketserver's default is 5: 64 modalities connecting at once saw
    #: SYNs dropped and connections delayed by TCP retransmission for tens of seconds)
    request_queue_size = 128
    allowed_addresses: AddressAllowList | None = None
    on_refused: Refused | None = None
    admission: Admission | None = None
    #: read by broker.dicom.message_guard for the associations of this server
    max_message_bytes: int = message_guard.DEFAULT_MAX_MESSAGE_BYTES
    on_message_too_large: message_guard.TooLarge | None = None

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        client, address = self.socket.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True,
                                                  do_handshake_on_connect=False)
        return client, address

    def verify_request(self, request: _Request, client_address: Any) -> bool:
        allowed = self.allowed_addresses
        if allowed is not None and not allowed.allows(str(client_address[0])):
            self._refused("address_not_allowed", client_address,
                          f"address not in {allowed.setting}")
            return False
        admission = self.admission
        if admission is None or admission.admit(request, client_address) is not None:
            return True
        refuse_busy(request)
        self._refused("per_address_cap", client_address,
                      f"{admission.held(str(client_address[0]))} connections open from this "
                      f"address (dicom.max_associations_per_address "
                      f"{admission.limit.per_address}); A-ASSOCIATE-RJ local-limit-exceeded")
        return False

    def process_request(self, request: _Request, client_address: Any) -> None:
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread for it: its slot is given back here
            self._release(request)
            raise

    def process_request_thread(self, request: _Request,
                               client_address: tuple[str, int] | str) -> None:
        if isinstance(request, ssl.SSLSocket):
            blocking = request.gettimeout()
            try:
                request.settimeout(self.handshake_timeout)
                request.do_handshake()
                request.settimeout(blocking)
            except (OSError, ValueError) as exc:
                conn = self.admission.connection(request) if self.admission else None
                if conn is None or not conn.cut:  # a cut one was reported already
                    self._refused("tls_handshake", client_address, handshake_reason(exc))
                self._release(request)
                self.shutdown_request(request)
                return
        try:
            super().process_request_thread(request, client_address)
        finally:
            conn = self.admission.connection(request) if self.admission else None
            if conn is not None and (conn.assoc is None or conn.assoc.ident is None):
                self._release(request)  # no association thread took the slot over

    def attach(self, request: _Request, assoc: Any) -> None:
        """Hand the slot of ``request`` to its association: given back when its thread ends."""
        admission = self.admission
        conn = admission.connection(request) if admission is not None else None
        if admission is None or conn is None:
            return
        conn.assoc = assoc
        run = assoc.run

        def run_then_release() -> None:
            try:
                run()
            finally:
                admission.release(conn)

        assoc.run = run_then_release

    def service_actions(self) -> None:
        super().service_actions()
        admission = self.admission
        if admission is None:
            return
        for conn in admission.overdue():
            self._refused("negotiation_timeout", conn.peer,
                          f"no whole A-ASSOCIATE-RQ within {admission.negotiation_timeout:g} s "
                          "of connecting (dicom.negotiation_timeout)")
            cut(conn.request)

    def _release(self, request: _Request) -> None:
        conn = self.admission.connection(request) if self.admission else None
        if self.admission is not None and conn is not None:
            self.admission.release(conn)

    def _refused(self, reason: str, address: Any, detail: str) -> None:
        if self.on_refused is not None:
            peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
            self.on_refused(reason, peer, detail)


class AdmittedRequestHandler(RequestHandler):
    """pynetdicom's handler, handing the connection's slot to the association it creates."""

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        if isinstance(self.server, NoDelayServer):
            self.server.attach(self.request, assoc)
        return assoc


def latin1_name(pn: str) -> str:
    """A PN for ISO_IR 100: the alphabetic group only, unencodable characters as '?'."""
    alphabetic = pn.split("=")[0]
    return alphabetic.encode("latin-1", errors="replace").decode("latin-1")


class DicomServer:
    def __init__(self, db_path: str | Path, *, ae_title: str, host: str, port: int,
                 max_associations: int = 128, calling_aes: list[str] | None = None,
                 options: WorklistOptions | None = None, fast_path: bool = True,
                 writer: Writer | None = None, mpps_match_accession: bool = True,
                 ssl_context: ssl.SSLContext | None = None, handshake_timeout: float = 10.0,
                 allowed_addresses: AddressAllowList | None = None,
                 max_concurrent_queries: int = 4,
                 max_message_bytes: int = message_guard.DEFAULT_MAX_MESSAGE_BYTES,
                 max_associations_per_address: int = 32,
                 negotiation_timeout: float = 10.0,
                 query_limits: QueryLimits | None = None,
                 mpps_store_timeout: float = 30.0) -> None:
        self.db_path = Path(db_path)
        self.ae_title, self.host, self.port = ae_title, host, port
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        self.allowed_addresses = allowed_addresses
        self.max_message_bytes = max_message_bytes
        self.per_address = PerAddressLimit(max_associations_per_address)
        self.negotiation_timeout = negotiation_timeout
        self.options = options or WorklistOptions()
        self.writer = writer
        self.mpps_match_accession = mpps_match_accession
        #: queues the RIS messages of a status change; set by the application
        self.notify: mpps_flow.Notify | None = None
        #: told when an MPPS becomes final (storage commitment, completion); set by the app
        self.final: mpps_flow.Final | None = None
        #: queues copies of MPPS requests for downstream SCPs: (connection, operation, SOP
        #: Instance UID, dataset as DICOM JSON) → queued count; set by the application
        self.forward: Any = None
        #: storage commitment reports and IAN; set by the application
        self.closure: ClosureScp | None = None
        #: called (from an association thread) after messages were queued
        self.on_queued: Any = None
        self.fast = fastpath.apply() if fast_path else False
        pdu_guard.apply()
        message_guard.apply(max_message_bytes)
        self.ae = AE(ae_title=ae_title)
        self.ae.maximum_associations = max_associations
        self.ae.require_called_aet = True
        if calling_aes:
            self.ae.require_calling_aet = calling_aes
        self.ae.network_timeout = 60
        self.ae.acse_timeout = negotiation_timeout  # the wait for the A-ASSOCIATE-RQ, ARTIM
        self.ae.dimse_timeout = 60
        served = [ModalityWorklistInformationFind, Verification]
        if writer is not None:
            served += [ModalityPerformedProcedureStep, InstanceAvailabilityNotification]
        for sop_class in served:
            self.ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        if writer is not None:  # the archive's reports on an association it opens (SCP role)
            self.ae.add_supported_context(StorageCommitmentPushModel, ALL_TRANSFER_SYNTAXES,
                                          scu_role=False, scp_role=True)
        self._server: ThreadedAssociationServer | None = None
        self._thread: threading.Thread | None = None
        self._local = threading.local()
        self.queries = 0
        self._query_slots = threading.BoundedSemaphore(max(1, max_concurrent_queries))
        self.query_limits = query_limits or QueryLimits()
        #: how long an N-CREATE/N-SET waits for its store job before answering 0110
        self.mpps_store_timeout = mpps_store_timeout
        self.metrics: Metrics | None = None

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
                               (evt.EVT_N_EVENT_REPORT, self._on_n_event_report)]
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
    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = open_reader(self.db_path)
            self._local.conn = conn
        return conn

    def _on_echo(self, ev: Event) -> int:
        return 0x0000

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

    def _on_message_too_large(self, peer: str, calling_ae: str, received: int,
                              limit: int) -> None:
        """Counted here; broker.dicom.message_guard logged it and aborts the association."""
        if self.metrics is not None:
            self.metrics.rejected("dicom", "message_too_large")

    def _on_refused(self, reason: str, peer: str, detail: str) -> None:
        """A connection closed before any association (address, TLS handshake)."""
        if self.metrics is not None:
            self.metrics.rejected("dicom", reason)
        event(log, "dicom_connection_refused", logging.WARNING, peer=peer, reason=detail)

    def _on_find(self, ev: Event) -> Iterator[tuple[Any, Any]]:
        started = time.perf_counter()
        calling = ev.assoc.requestor.ae_title
        options = self.options.for_caller(calling)
        matches = 0
        try:
            identifier = ev.identifier
            parsed = parse_identifier(identifier,
                                      calling.strip() if options.station_key else "",
                                      self.query_limits)
        except QueryLimitError as exc:  # logged with the value's size, never its value
            event(log, "mwl_query_refused", logging.WARNING, calling_ae=calling,
                  status=f"0x{exc.status:04X}", attribute=exc.keyword, count=exc.count,
                  limit=exc.limit, setting=exc.setting)
            if self.metrics is not None:
                self.metrics.rejected("dicom", "query_limit")
            self._count_find("refused", started)
            yield status_dataset(exc.status, exc.comment), None
            return
        except QueryError as exc:
            event(log, "mwl_query_refused", logging.WARNING, calling_ae=calling,
                  status=f"0x{exc.status:04X}", error=without_values(exc.comment))
            self._count_find("refused", started)
            yield status_dataset(exc.status, exc.comment), None
            return
        except Exception as exc:  # an identifier pydicom cannot decode
            event(log, "mwl_query_refused", logging.WARNING, calling_ae=calling,
                  status="0xA900", error=without_values(str(exc)))
            self._count_find("refused", started)
            yield status_dataset(0xA900, f"identifier cannot be read: {exc}"), None
            return
        if self.options.show_all_statuses:
            parsed.query.include_hidden = True
        status = 0xFF01 if parsed.unsupported else 0xFF00
        encode_name = latin1_name if options.charset == "ISO_IR 100" else None
        syntax = ev.context.transfer_syntax
        implicit = syntax == ImplicitVRLittleEndian
        pre_encode = self.fast and (implicit or syntax == ExplicitVRLittleEndian)
        charset = options.charset
        try:
            rows = search(self._reader(), parsed.query)
            while True:
                # build the answers a chunk at a time, at most `query_slots` queries at once:
                # the asyncio loop (HL7) is not starved by many associations querying
                with self._query_slots:
                    chunk = []
                    for row in itertools.islice(rows, QUERY_CHUNK):
                        nodes = response_nodes(row, parsed.keys, encode_name)
                        chunk.append(fastpath.PreEncoded(
                            encode(nodes, charset, implicit), implicit,
                            partial(to_pydicom, nodes, charset)) if pre_encode
                            else to_pydicom(nodes, charset))
                if not chunk:
                    break
                for answer in chunk:
                    if ev.is_cancelled:
                        self._log_query(calling, parsed, matches, started, "cancelled")
                        self._count_find("cancelled", started)
                        yield 0xFE00, None
                        return
                    matches += 1
                    yield status, answer
        except sqlite3.Error as exc:
            event(log, "mwl_query_failed", logging.ERROR, calling_ae=calling, error=str(exc))
            self._count_find("failed", started)
            yield status_dataset(0xC001, f"worklist store unavailable: {exc}"), None
            return
        self.queries += 1
        self._log_query(calling, parsed, matches, started, "done")
        self._count_find("done", started)
        yield 0x0000, None

    def _on_n_event_report(self, ev: Event) -> tuple[Any, Any]:
        if self.closure is None:
            return status_dataset(0x0110, "storage commitment reports are not taken here"), None
        return self.closure.on_n_event_report(ev)

    def _on_n_create(self, ev: Event) -> tuple[Any, Any]:
        started = time.perf_counter()
        calling = ev.assoc.requestor.ae_title.strip()
        request: Any = ev.request
        if request.AffectedSOPClassUID == IAN_SOP_CLASS:
            if self.closure is None:
                return status_dataset(0x0110, "instance availability is not taken here"), None
            return self.closure.on_ian(ev)
        requested = request.AffectedSOPInstanceUID
        uid = str(requested) if requested else generate_uid()
        try:
            stored = _json_of(ev, request.AttributeList, "attribute_list")
            status, refs = mpps_checks.check_create(stored)
            outcome = self._write(uid, "N-CREATE", partial(
                _create, uid=uid, status=status, dataset=stored,
                summary=mpps_checks.summary(stored, uid), calling_ae=calling, refs=refs,
                match_accession=self.mpps_match_accession, notify=self.notify,
                forward=self.forward))
        except mpps_flow.MppsError as exc:
            event(log, "mpps_refused", logging.WARNING, sop_instance_uid=uid, calling_ae=calling,
                  operation="N-CREATE", status=f"0x{exc.status:04X}", error=exc.comment)
            self._count_mpps("refused")
            return mpps_checks.failure(exc), None
        self._queued(outcome)
        self._count_mpps("replayed" if outcome.replayed else status)
        event(log, "mpps_created", logging.WARNING if outcome.unscheduled else logging.INFO,
              sop_instance_uid=uid, calling_ae=calling, status=status, steps=len(outcome.steps),
              unscheduled=outcome.unscheduled, queued=outcome.queued, replayed=outcome.replayed,
              ms=round((time.perf_counter() - started) * 1000, 2))
        if requested:
            return 0x0000, None  # the attribute list is optional in the response (F.7.2.1)
        assigned = Dataset()
        assigned.AffectedSOPInstanceUID = uid  # pynetdicom moves it into the response
        return 0x0000, assigned

    def _on_n_set(self, ev: Event) -> tuple[Any, Any]:
        started = time.perf_counter()
        calling = ev.assoc.requestor.ae_title.strip()
        request: Any = ev.request
        uid = str(request.RequestedSOPInstanceUID or "")
        try:
            modifications = _json_of(ev, request.ModificationList, "modification_list")
            outcome = self._write(uid, "N-SET", partial(_update, uid=uid, final=self.final,
                                          merge=mpps_checks.merger(modifications, uid),
                                          notify=self.notify, forward=self.forward,
                                          changes=modifications))
        except mpps_flow.MppsError as exc:
            event(log, "mpps_refused", logging.WARNING, sop_instance_uid=uid, calling_ae=calling,
                  operation="N-SET", status=f"0x{exc.status:04X}", error=exc.comment)
            self._count_mpps("refused")
            return mpps_checks.failure(exc), None
        self._queued(outcome)
        self._count_mpps("replayed" if outcome.replayed else outcome.status)
        event(log, "mpps_updated", sop_instance_uid=uid, calling_ae=calling,
              status=outcome.status, steps=len(outcome.steps), queued=outcome.queued,
              replayed=outcome.replayed, ms=round((time.perf_counter() - started) * 1000, 2))
        return 0x0000, None

    def _count_find(self, outcome: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.worklist_query(outcome, time.perf_counter() - started)

    def _count_mpps(self, status: str) -> None:
        if self.metrics is not None:
            self.metrics.performed_step(status)

    def _queued(self, outcome: mpps_flow.Outcome) -> None:
        if outcome.queued and self.on_queued is not None:
            self.on_queued()

    def _write(self, uid: str, operation: str, work: Any) -> mpps_flow.Outcome:
        """Run an MPPS job in the store; no answer within ``mpps_store_timeout`` is 0110 (the
        job may still commit: the same request resent is then answered as done)."""
        assert self.writer is not None
        timeout = self.mpps_store_timeout
        try:
            outcome: mpps_flow.Outcome = self.writer.run_sync(work, timeout=timeout)
        except StoreError as exc:
            raise mpps_flow.MppsError(0x0110, f"store unavailable: {exc}") from exc
        except TimeoutError:
            event(log, "mpps_store_timeout", logging.WARNING, sop_instance_uid=uid,
                  operation=operation, timeout=timeout)
            raise mpps_flow.MppsError(0x0110, f"store busy, not done within {timeout:g} s: "
                                      "send the same request again") from None
        return outcome

    @staticmethod
    def _log_query(calling: str, parsed: ParsedQuery, matches: int, started: float,
                   outcome: str) -> None:
        event(log, "mwl_query", calling_ae=calling, outcome=outcome, matches=matches,
              keys=",".join(sorted(parsed.query.keywords())) or "-",
              unsupported=",".join(parsed.unsupported) or "-",
              ms=round((time.perf_counter() - started) * 1000, 2))



def _json_of(ev: Event, encoded: Any, attribute: str) -> dict[str, Any]:
    """A request's dataset as DICOM JSON: straight from its encoding when it is little
    endian, else (and for what the fast converter leaves to it) through pydicom."""
    syntax = ev.context.transfer_syntax
    if encoded is not None and syntax.is_little_endian:
        fast = to_json(encoded.getvalue(), syntax.is_implicit_VR)
        if fast is not None:
            return fast
    dataset: Dataset = getattr(ev, attribute)
    return dataset.to_json_dict()


def _create(conn: sqlite3.Connection, **kwargs: Any) -> mpps_flow.Outcome:
    outcome = mpps_flow.create(MppsRepo(conn), kwargs["uid"], kwargs["status"],
                               kwargs["dataset"], kwargs["summary"], kwargs["calling_ae"],
                               kwargs["refs"], kwargs["match_accession"], kwargs["notify"])
    if kwargs.get("forward") is not None and not outcome.replayed:
        outcome.queued += kwargs["forward"](conn, "MPPS N-CREATE", kwargs["uid"],
                                            kwargs["dataset"])
    return outcome


def _update(conn: sqlite3.Connection, uid: str, merge: mpps_flow.Merge,
            notify: mpps_flow.Notify | None, final: mpps_flow.Final | None = None,
            forward: Any = None, changes: dict[str, Any] | None = None) -> mpps_flow.Outcome:
    outcome = mpps_flow.update(MppsRepo(conn), uid, merge, notify, final)
    if forward is not None and not outcome.replayed:
        outcome.queued += forward(conn, "MPPS N-SET", uid, changes or {})
    return outcome
