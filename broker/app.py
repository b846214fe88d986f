"""Builds the broker's components from settings, starts and stops them, handles signals."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import logging
import signal
import socket
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from broker import __version__
from broker.admin import health
from broker.admin.analyst import AnalystService
from broker.admin.fhir_http import FhirWeb
from broker.admin.http import AdminServer
from broker.admin.ports import HealthSource
from broker.admin.service import AdminService
from broker.admin.ups_rs import UpsWeb
from broker.admin.ups_ws import EventHub
from broker.analyst.query_log import QueryRecorder
from broker.audit.trail import AuditTrail, open_trail
from broker.cluster.membership import Membership
from broker.config import Settings
from broker.dicom import mpps as mpps_checks
from broker.dicom import pynetdicom_patches, worklist_matching
from broker.dicom.archive_reports import ArchiveReports
from broker.dicom.forward import MppsForwarder
from broker.dicom.server import DicomServer
from broker.dicom.stgcmt import CommitmentRequester
from broker.dicom.ups_events import EventReporter
from broker.dicom.ups_scp import UpsScp
from broker.flows.completion import CompletionFlow
from broker.flows.fhir_in import FhirIntake
from broker.flows.hl7_in import Ingestor
from broker.flows.mpps_in import MppsIn
from broker.flows.ups import UpsService, destination_of
from broker.flows.upstream import UpstreamPoller
from broker.hl7 import ack
from broker.hl7.server import MllpServer
from broker.logs import event
from broker.mapping.holder import MappingHolder
from broker.mapping.watcher import MappingWatcher
from broker.metrics import Metrics
from broker.model.ports import Hl7Handler, OversizeHandler
from broker.net.allow import AddressAllowList
from broker.net.certs import certificates
from broker.net.exposure import open_listeners
from broker.net.tls import client_args, client_context, server_context
from broker.outbound.fhir_auth import BearerToken, ClientCredentials, NoAuth
from broker.outbound.fhir_client import FhirSender
from broker.outbound.outbox import Destination, OutboxWorker, RequestDestination
from broker.store.analyst_queries import AnalystReader
from broker.store.errors import StoreError
from broker.store.factory import Store, open_store
from broker.store.repo import OutboxRow
from broker.store.unit_of_work import UnitOfWork
from broker.workflow.completion import Completion, CompletionPolicy
from broker.workflow.fhir_status import FhirStatus
from broker.workflow.notify import StatusNotifier

log = logging.getLogger("broker.app")


class Broker:
    """Every component, built from the settings with its collaborators, started in order and
    stopped in reverse (a start that fails stops what already started)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.mappings = MappingHolder(settings.mappings.directory)
        db = settings.database
        self.node = node_id(settings)
        ack.use_node(self.node)
        self.audit = open_trail(settings.audit, self.node, settings.dicom.ae_title, db)
        self.store = open_store(db, self.node)
        self.writer = self.store.writer
        d = settings.dicom
        self.ups = UpsService({u.ae_title.strip(): u for u in d.ups.subscribers},
                              on_queued=self._queued)
        self.ingestor = Ingestor(self.writer, self.mappings, settings.hl7, settings.mllp,
                                 metrics=self.metrics, audit=self.audit,
                                 ups_watch=self.ups.watch if d.ups.enabled else None)
        self.mllp = _mllp_server(settings, self._handle_hl7, self.ingestor.oversize_ack,
                                 self.metrics, self.audit)
        interval = settings.mappings.watch_interval
        self.watcher = MappingWatcher(self.mappings, interval) if interval > 0 else None
        o = settings.outbound
        destinations = [Destination(d.name, d.host, d.port, d.timeout,
                                    client_context(d.tls, f"outbound.destinations[{i}].tls"),
                                    d.tls.server_hostname, d.charset)
                        for i, d in enumerate(o.destinations)]
        fhir, fd = _fhir_destination(settings), settings.fhir.destination
        notifier = StatusNotifier(self.mappings, [d.name for d in destinations],
                                  {d.name: d.charset for d in destinations if d.charset},
                                  fhir=FhirStatus(fhir.name, fd.all_orders, fd.wado_rs_url,
                                                  dict(fd.dimse_addresses))
                                  if fhir else None)
        self.completion = CompletionFlow(self.writer,
                                         _completion(settings, self.mappings, notifier),
                                         on_queued=self._queued)
        self.archive_reports = ArchiveReports(self.completion)
        self.ups.notify = notifier
        self.ups.final = self.completion.mpps_final
        requests = _commitment_destinations(settings, self.archive_reports) + (
            _forward_destinations(settings)) + ([fhir] if fhir else [])
        self.ups_reporters = _ups_reporters(settings)
        requests += [RequestDestination(destination_of(r.ae_title), r.send_row)
                     for r in self.ups_reporters]
        self.outbox = OutboxWorker(self.store.outbox_reader, self.writer,
                                   [*destinations, *requests], backoff_base=o.backoff_base,
                                   backoff_max=o.backoff_max, poll=o.poll,
                                   on_settled=self.completion.settled, metrics=self.metrics,
                                   node=self.node, lease_seconds=o.lease_seconds,
                                   listen=self.store.listen, shutdown_grace=o.shutdown_grace)
        self.purger = self.store.purger(settings.retention)
        self.membership = Membership(self.writer, self.node, self._ports, version=__version__)
        self.upstreams = [UpstreamPoller(u, self.writer, d.ae_title, self.metrics, i, self.node)
                          for i, u in enumerate(settings.upstream_worklists)]
        ups = self.ups

        def notify(uow: UnitOfWork, steps: list[int], status: str,
                   summary: dict[str, Any]) -> int:
            """The RIS's status message, and the workitems' state reports."""
            return notifier(uow, steps, status, summary) + ups.state_changed(uow, steps)
        mpps = MppsIn(self.writer, notify=notify, final=self.completion.mpps_final,
                      forward_to=[f.name for f in d.mpps_forward],
                      match_accession=d.mpps_match_accession, store_timeout=d.mpps_store_timeout,
                      on_queued=self._queued, audit=self.audit)
        self.query_log = QueryRecorder(self.writer, self.node)
        ups_scp = UpsScp(self.ups, partial(self.writer.run_sync, timeout=d.mpps_store_timeout),
                         self.store.worklist_reader,
                         worklist_matching.from_settings(d).limits, d.charset,
                         on_queued=self._queued) if d.ups.enabled else None
        self.dicom = _dicom_server(settings, self.store, mpps, self.archive_reports,
                                   self.metrics, self.query_log, self.audit, ups_scp)
        self.metrics.count_associations(lambda: self.dicom.active_associations)
        self.metrics.set_certificates(certificates(settings))  # those the contexts loaded
        self.event_hub: EventHub | None = None
        self.admin = self._admin_server() if settings.admin.enabled else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = contextlib.AsyncExitStack()

    def _admin_server(self) -> AdminServer:
        sources: list[HealthSource] = [
            partial(health.mllp, self.mllp, self.ingestor.counts),
            partial(health.dicom, self.dicom), partial(health.outbox, self.outbox),
            partial(health.writer, self.writer),
            partial(health.database, self.membership, self.store.description),
            *(partial(health.upstream, u) for u in self.upstreams)]
        service = AdminService(self.writer, self.store.admin_reader, self.outbox, self.mappings,
                               self.metrics, sources, self.node)
        analyst = AnalystService(lambda: AnalystReader(service.reader.conn,
                                                       service.reader.dialect),
                                 self.store.worklist_reader,
                                 worklist_matching.from_settings(self.settings.dicom),
                                 ingest=self.ingestor.handle)
        d = self.settings.dicom
        dicomweb = UpsWeb(self.ups, self.writer, self.store.worklist_reader,
                          lambda: (service.reader.conn, service.reader.dialect),
                          worklist_matching.from_settings(d).limits, d.charset,
                          on_queued=self._queued) if d.ups.enabled else None
        self.event_hub = dicomweb.hub if dicomweb is not None else None
        intake = self.settings.fhir.intake
        fhir = FhirWeb(FhirIntake(
            self.writer, self.mappings, metrics=self.metrics, audit=self.audit,
            cancel_started=self.settings.hl7.cancel_started_steps,
            ups_watch=self.ups.watch if d.ups.enabled else None,
            on_queued=self._queued), intake.max_body_bytes) if intake.enabled else None
        return AdminServer(self.settings.admin, self.metrics, service, analyst,
                           audit=self.audit, dicomweb=dicomweb, fhir=fhir)

    async def _scp_status(self, status: str) -> None:
        """Tell the UPS subscribers the broker RESTARTED or is GOING DOWN (event type 4)."""
        if not self.settings.dicom.ups.enabled:
            return
        try:
            if await self.writer.run(lambda uow: self.ups.scp_status(uow, status)):
                self.outbox.wake()
        except StoreError as exc:
            event(log, "ups_scp_status_not_queued", logging.WARNING, status=status,
                  error=str(exc))

    def _ports(self) -> tuple[int, int, int]:
        admin = self.settings.admin.port if self.settings.admin.enabled else 0
        return self.mllp.bound_port or 0, self.dicom.bound_port or 0, admin

    def _queued(self) -> None:
        """Called from an association thread after messages were queued: wake the outbox
        and the UPS-RS event hub."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.outbox.wake)
            if self.event_hub is not None:
                self._loop.call_soon_threadsafe(self.event_hub.wake)

    async def _handle_hl7(self, raw: bytes, peer: str) -> bytes:
        outcome = await self.ingestor.handle(raw, peer)
        if self.event_hub is not None:
            self.event_hub.wake()  # a UPS report the message queued goes out now
        return outcome.ack

    async def start(self) -> None:
        """Start the store, the outbox, the listeners, the timers and the console, in order;
        when one fails, stop those already started (in reverse) and raise."""
        started = time.perf_counter()
        self._loop = asyncio.get_running_loop()
        async with contextlib.AsyncExitStack() as stack:
            await asyncio.to_thread(self.audit.start)  # first to start, last to stop
            stack.push_async_callback(asyncio.to_thread, self.audit.stop)
            await asyncio.to_thread(self.writer.start)
            stack.push_async_callback(asyncio.to_thread, self.store.close)
            stack.push_async_callback(asyncio.to_thread, self.writer.stop)
            await self.completion.start()
            stack.push_async_callback(self.completion.stop)
            await self.outbox.start()
            for reporter in self.ups_reporters:  # after the outbox stops: its associations
                stack.push_async_callback(asyncio.to_thread, reporter.close)
            stack.push_async_callback(self.outbox.stop)
            await self.mllp.start()
            stack.push_async_callback(self.mllp.stop, self.settings.mllp.shutdown_grace)
            await self.query_log.start()
            stack.push_async_callback(self.query_log.stop)
            await asyncio.to_thread(self.dicom.start)
            stack.push_async_callback(asyncio.to_thread, self.dicom.stop)
            if self.watcher is not None:
                await self.watcher.start()
                stack.push_async_callback(self.watcher.stop)
            await self.membership.start()
            stack.push_async_callback(self.membership.stop)
            await self.purger.start()
            stack.push_async_callback(self.purger.stop)
            for upstream in self.upstreams:  # after the writer, stopped before it
                await upstream.start()
                stack.push_async_callback(upstream.stop)
            if self.admin is not None:
                await self.admin.start()
                stack.push_async_callback(self.admin.stop)
            self._running = stack.pop_all()
        for exposed in open_listeners(self.settings):
            event(log, "listener_open_to_all", logging.WARNING, listener=exposed.listener,
                  host=exposed.host, port=exposed.port, restrict_with=exposed.restrict)
        self.audit.application_start()
        await self._scp_status("RESTARTED")
        event(log, "broker_ready", node=self.node, database=self.store.description,
              mllp_port=self.mllp.bound_port, dicom_port=self.dicom.bound_port,
              seconds=round(time.perf_counter() - started, 3))

    async def stop(self) -> None:
        """Stop what started, in reverse order: the console first, the store last."""
        event(log, "broker_stopping")
        self.audit.application_stop()
        await self._scp_status("GOING DOWN")
        await self._running.aclose()
        event(log, "broker_stopped")

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, then stop gracefully; SIGHUP reloads mappings."""
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_requested.set)
        loop.add_signal_handler(
            signal.SIGHUP,
            lambda: loop.run_in_executor(None, functools.partial(self.mappings.reload, "sighup")))
        await self.start()
        freeze_startup_objects()
        try:
            await stop_requested.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
            await self.stop()


def freeze_startup_objects() -> int:
    """Move what start-up made (modules, settings, mappings, dictionaries) out of the
    collector's reach; the number of objects frozen. pynetdicom's association server runs a
    full ``gc.collect()`` every 60 turns of its loop (6 s here), which otherwise walks all
    of them each time (tens of ms of CPU). No collection first: start-up leaves a few
    unreachable objects (10 measured), and a full collection here cost ~25 ms while the
    first requests were already waiting."""
    gc.freeze()
    return gc.get_freeze_count()


def node_id(settings: Settings) -> str:
    """This instance's name: ``node.id``, else the host name and the MLLP port."""
    return settings.node.id or f"{socket.gethostname()}:{settings.mllp.port}"


def _mllp_server(settings: Settings, handler: Hl7Handler, oversize: OversizeHandler,
                 metrics: Metrics, audit: AuditTrail) -> MllpServer:
    m = settings.mllp
    return MllpServer(handler, oversize, host=m.host, port=m.port, max_frame=m.max_frame_bytes,
                      idle_timeout=m.idle_timeout, max_connections=m.max_connections,
                      ssl_context=server_context(m.tls, "mllp.tls"),
                      handshake_timeout=m.tls.handshake_timeout,
                      allowed_addresses=AddressAllowList(
                          m.allowed_addresses, "mllp.allowed_addresses") or None,
                      max_connections_per_address=m.max_connections_per_address,
                      frame_timeout=m.frame_timeout, metrics=metrics, audit=audit)


def _dicom_server(settings: Settings, store: Store, mpps: MppsIn,
                  archive_reports: ArchiveReports, metrics: Metrics,
                  query_log: QueryRecorder, audit: AuditTrail,
                  ups: UpsScp | None = None) -> DicomServer:
    d = settings.dicom
    pynetdicom_patches.apply(d.fast_path, d.max_message_bytes)
    return DicomServer(store.worklist_reader, ae_title=d.ae_title, host=d.host, port=d.port,
                       max_associations=d.max_associations,
                       calling_aes=d.allowed_calling_aes or None,
                       matching=worklist_matching.from_settings(d),
                       fast_path=d.fast_path,
                       max_concurrent_queries=d.max_concurrent_queries,
                       max_message_bytes=d.max_message_bytes,
                       max_associations_per_address=d.max_associations_per_address,
                       negotiation_timeout=d.negotiation_timeout,
                       ssl_context=server_context(d.tls, "dicom.tls"),
                       handshake_timeout=d.tls.handshake_timeout,
                       allowed_addresses=AddressAllowList(
                           d.allowed_addresses, "dicom.allowed_addresses") or None,
                       mpps=mpps, archive_reports=archive_reports, metrics=metrics,
                       query_log=query_log.record if d.query_log else None, audit=audit,
                       ups=ups)


def _completion(settings: Settings, mappings: Callable[[], Any],
                notifier: StatusNotifier) -> Completion:
    sc = settings.storage_commitment
    policy = CompletionPolicy(archive=sc.name if sc.ae_title else "", delay=sc.delay,
                              report_timeout=sc.report_timeout,
                              available_statuses=tuple(a.upper()
                                                       for a in sc.available_statuses))
    return Completion(mappings, notifier, policy, mpps_checks.summary, node_id(settings))


def _commitment_destinations(settings: Settings,
                             scp: ArchiveReports) -> list[RequestDestination]:
    """The archive asked for storage commitment, as an outbox destination (none when off)."""
    sc = settings.storage_commitment
    if not sc.ae_title:
        return []
    requester = CommitmentRequester(settings.dicom.ae_title, sc.ae_title, sc.host, sc.port,
                                    timeout=sc.timeout,
                                    same_association_wait=sc.same_association_wait,
                                    on_report=scp.report,
                                    tls_args=client_args(sc.tls, "storage_commitment.tls",
                                                         sc.host))

    def send(row: OutboxRow) -> tuple[str, str, str]:
        request = json.loads(row.payload)
        outcome = requester.request(request["transaction_uid"],
                                    [(c, i) for c, i in request["instances"]])
        return outcome.outcome, outcome.reason, outcome.detail
    return [RequestDestination(sc.name, send)]


def _ups_reporters(settings: Settings) -> list[EventReporter]:
    """What sends each UPS subscriber's event reports (an outbox destination each)."""
    d = settings.dicom
    return [EventReporter(d.ae_title, u.ae_title.strip(), u.host, u.port, u.timeout,
                          client_args(u.tls, f"dicom.ups.subscribers[{i}].tls", u.host),
                          d.charset) for i, u in enumerate(d.ups.subscribers)]


def _forward_destinations(settings: Settings) -> list[RequestDestination]:
    """Downstream MPPS SCPs, as outbox destinations."""
    return [RequestDestination(f.name, MppsForwarder(
        settings.dicom.ae_title, f.ae_title, f.host, f.port, f.timeout,
        client_args(f.tls, f"dicom.mpps_forward[{i}].tls", f.host)).send_row)
        for i, f in enumerate(settings.dicom.mpps_forward)]


def _fhir_destination(settings: Settings) -> RequestDestination | None:
    """The FHIR server told of each step's progress, as an outbox destination (None: off)."""
    f = settings.fhir.destination
    if not f.url:
        return None
    context = client_context(f.tls, "fhir.destination.tls")
    auth: BearerToken | ClientCredentials | NoAuth = NoAuth()
    if f.oauth2_token_url:
        auth = ClientCredentials(f.oauth2_token_url, f.client_id, f.client_secret,
                                 f.client_secret_file, f.scope, f.timeout, context)
    elif f.token or f.token_file:
        auth = BearerToken(f.token, f.token_file)
    return RequestDestination(f.name, FhirSender(f.url, auth, f.timeout, context).send_row)
