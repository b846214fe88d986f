"""Builds the broker's components from settings, starts and stops them, handles signals."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import signal
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from broker.admin.http import AdminServer
from broker.config import Settings
from broker.dicom import mpps as mpps_checks
from broker.dicom.archive_reports import ClosureScp
from broker.dicom.forward import MppsForwarder
from broker.dicom.forward import payload as forward_payload
from broker.dicom.mwl import QueryLimits
from broker.dicom.server import CallingAeOptions, DicomServer, WorklistOptions
from broker.dicom.stgcmt import CommitmentRequester
from broker.flows.hl7_in import Ingestor
from broker.hl7.ack import new_control_id
from broker.hl7.server import MllpServer
from broker.logs import event
from broker.mapping.holder import MappingHolder
from broker.mapping.watcher import MappingWatcher
from broker.metrics import Metrics
from broker.net.allow import AddressAllowList
from broker.net.exposure import open_listeners
from broker.net.tls import client_args, client_context, server_context
from broker.outbound.outbox import Destination, OutboxWorker, RequestDestination
from broker.store.completion import Instance
from broker.store.purger import Purger
from broker.store.repo import OutboxRepo, OutboxRow
from broker.store.writer import Writer
from broker.workflow.completion import ACTION_TYPE, Closure, ClosurePolicy
from broker.workflow.notify import StatusNotifier

log = logging.getLogger("broker.app")


class Broker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.mappings = MappingHolder(settings.mappings.directory)
        db = settings.database
        self.writer = Writer(db.path, synchronous=db.synchronous,
                             busy_timeout_ms=db.busy_timeout_ms, max_batch=db.max_batch,
                             poll_ms=db.writer_poll_ms)
        self.ingestor = Ingestor(self.writer, self.mappings, settings.hl7, settings.mllp)
        m = settings.mllp
        self.mllp = MllpServer(self._handle_hl7, self.ingestor.oversize_ack, host=m.host,
                               port=m.port, max_frame=m.max_frame_bytes,
                               idle_timeout=m.idle_timeout, max_connections=m.max_connections,
                               ssl_context=server_context(m.tls, "mllp.tls"),
                               handshake_timeout=m.tls.handshake_timeout,
                               allowed_addresses=AddressAllowList(
                                   m.allowed_addresses, "mllp.allowed_addresses") or None,
                               max_connections_per_address=m.max_connections_per_address,
                               frame_timeout=m.frame_timeout)
        interval = settings.mappings.watch_interval
        self.watcher = MappingWatcher(self.mappings, interval) if interval > 0 else None
        self.dicom = _dicom_server(settings, self.writer)
        o = settings.outbound
        destinations = [Destination(d.name, d.host, d.port, d.timeout,
                                    client_context(d.tls, f"outbound.destinations[{i}].tls"),
                                    d.tls.server_hostname, d.charset)
                        for i, d in enumerate(o.destinations)]
        notifier = StatusNotifier(self.mappings, [d.name for d in destinations],
                                  {d.name: d.charset for d in destinations if d.charset})
        self.closure = _closure(settings, self.mappings, notifier)
        self.closure_scp = ClosureScp(self.writer, self.closure)
        requests = _commitment_destinations(settings, self.closure_scp) + _forward_destinations(
            settings)
        self.outbox = OutboxWorker(db.path, self.writer, [*destinations, *requests],
                                   backoff_base=o.backoff_base, backoff_max=o.backoff_max,
                                   poll=o.poll, on_settled=self._settled)
        self.purger = Purger(db.path, self.writer, settings.retention, db.busy_timeout_ms)
        self.dicom.notify = notifier
        self.dicom.final = self._mpps_final
        self.dicom.closure = self.closure_scp
        if settings.dicom.mpps_forward:
            self.dicom.forward = partial(_queue_forward, [f.name for f in
                                                          settings.dicom.mpps_forward])
        self._sweeper: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self.metrics = Metrics()
        self.ingestor.metrics = self.mllp.metrics = self.dicom.metrics = self.metrics
        self.outbox.metrics = self.metrics
        self.metrics.count_associations(lambda: self.dicom.active_associations)
        self.admin = AdminServer(self) if settings.admin.enabled else None

    def _mpps_final(self, conn: Any, mpps_pk: int, uid: str, status: str,
                    summary: dict[str, Any], steps: list[int]) -> int:
        instances = [Instance(*i) for i in summary.get("instances", [])]
        return self.closure.mpps_final(conn, mpps_pk, uid, status, instances, steps)

    def _settled(self, conn: Any, row: OutboxRow, outcome: str, reason: str) -> None:
        if row.message_type == ACTION_TYPE:
            self.closure.commitment_sent(conn, row.control_id, outcome, reason)

    async def _sweep(self, interval: float = 1.0) -> None:
        """Time out commitment reports and completion notices that waited too long."""
        while True:
            await asyncio.sleep(interval)
            try:
                if await self.writer.run(self.closure.sweep):
                    self.outbox.wake()
            except Exception as exc:  # the store is down: try again next round
                event(log, "closure_sweep_failed", logging.ERROR, error=str(exc))

    async def _handle_hl7(self, raw: bytes, peer: str) -> bytes:
        return (await self.ingestor.handle(raw, peer)).ack

    async def start(self) -> None:
        started = time.perf_counter()
        await asyncio.to_thread(self.writer.start)
        await self.mllp.start()
        loop = asyncio.get_running_loop()
        self.dicom.on_queued = lambda: loop.call_soon_threadsafe(self.outbox.wake)
        self.closure_scp.on_queued = self.dicom.on_queued
        await self.writer.run(self.closure.recover)
        self._sweeper = asyncio.create_task(self._sweep(), name="closure-sweep")
        await self.outbox.start()
        await self.purger.start()
        if self.watcher is not None:
            await self.watcher.start()
        await asyncio.to_thread(self.dicom.start)
        if self.admin is not None:
            await self.admin.start()
        for exposed in open_listeners(self.settings):
            event(log, "listener_open_to_all", logging.WARNING, listener=exposed.listener,
                  host=exposed.host, port=exposed.port, restrict_with=exposed.restrict)
        event(log, "broker_ready", database=str(self.writer.path),
              mllp_port=self.mllp.bound_port, dicom_port=self.dicom.bound_port,
              seconds=round(time.perf_counter() - started, 3))

    async def stop(self) -> None:
        event(log, "broker_stopping")
        if self.admin is not None:
            await self.admin.stop()
        await self.purger.stop()
        if self.watcher is not None:
            await self.watcher.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await asyncio.to_thread(self.dicom.stop)
        await self.mllp.stop(self.settings.mllp.shutdown_grace)
        await self.outbox.stop()
        await asyncio.to_thread(self.writer.stop)
        self._stopped.set()
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
        try:
            await stop_requested.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
            await self.stop()


def _dicom_server(settings: Settings, writer: Writer) -> DicomServer:
    d = settings.dicom
    options = WorklistOptions(
        show_all_statuses=d.show_all_statuses,
        default=CallingAeOptions(charset=d.charset),
        callers={c.ae_title: CallingAeOptions(c.station_key, c.charset) for c in d.calling_aes})
    return DicomServer(settings.database.path, ae_title=d.ae_title, host=d.host, port=d.port,
                       max_associations=d.max_associations,
                       calling_aes=d.allowed_calling_aes or None, options=options,
                       fast_path=d.fast_path, writer=writer,
                       mpps_match_accession=d.mpps_match_accession,
                       max_concurrent_queries=d.max_concurrent_queries,
                       max_message_bytes=d.max_message_bytes,
                       max_associations_per_address=d.max_associations_per_address,
                       negotiation_timeout=d.negotiation_timeout,
                       query_limits=QueryLimits(d.max_query_value_length,
                                                d.max_query_wildcards),
                       mpps_store_timeout=d.mpps_store_timeout,
                       ssl_context=server_context(d.tls, "dicom.tls"),
                       handshake_timeout=d.tls.handshake_timeout,
                       allowed_addresses=AddressAllowList(
                           d.allowed_addresses, "dicom.allowed_addresses") or None)


def _closure(settings: Settings, mappings: Callable[[], Any],
             notifier: StatusNotifier) -> Closure:
    sc = settings.storage_commitment
    policy = ClosurePolicy(archive=sc.name if sc.ae_title else "", delay=sc.delay,
                           report_timeout=sc.report_timeout,
                           available_statuses=tuple(a.upper() for a in sc.available_statuses))
    return Closure(mappings, notifier, policy, mpps_checks.summary)


def _commitment_destinations(settings: Settings, scp: ClosureScp) -> list[RequestDestination]:
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


def _forward_destinations(settings: Settings) -> list[RequestDestination]:
    """Downstream MPPS SCPs, as outbox destinations."""
    return [RequestDestination(f.name, MppsForwarder(
        settings.dicom.ae_title, f.ae_title, f.host, f.port, f.timeout,
        client_args(f.tls, f"dicom.mpps_forward[{i}].tls", f.host)).send_row)
        for i, f in enumerate(settings.dicom.mpps_forward)]


def _queue_forward(names: list[str], conn: Any, operation: str, uid: str,
                   dataset: dict[str, Any]) -> int:
    """Queue a copy of an MPPS request for each downstream SCP (ordered per MPPS)."""
    outbox = OutboxRepo(conn)
    text = forward_payload(operation, uid, dataset)
    for name in names:
        outbox.enqueue(name, uid, new_control_id(), operation, text)
    return len(names)
