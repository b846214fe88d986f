"""Builds the broker's components from settings, starts and stops them, handles signals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

from broker.config import Settings
from broker.dicom.server import CallingAeOptions, DicomServer, WorklistOptions
from broker.hl7.server import MllpServer
from broker.ingest import Ingestor
from broker.logs import event
from broker.mapping.holder import MappingHolder
from broker.outbound.outbox import Destination, OutboxWorker
from broker.store.writer import Writer
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
                               idle_timeout=m.idle_timeout, max_connections=m.max_connections)
        self.dicom = _dicom_server(settings, self.writer)
        o = settings.outbound
        destinations = [Destination(d.name, d.host, d.port, d.timeout) for d in o.destinations]
        self.outbox = OutboxWorker(db.path, self.writer, destinations,
                                   backoff_base=o.backoff_base, backoff_max=o.backoff_max,
                                   poll=o.poll)
        self.dicom.notify = StatusNotifier(self.mappings, [d.name for d in destinations])
        self._stopped = asyncio.Event()

    async def _handle_hl7(self, raw: bytes, peer: str) -> bytes:
        return (await self.ingestor.handle(raw, peer)).ack

    async def start(self) -> None:
        started = time.perf_counter()
        await asyncio.to_thread(self.writer.start)
        await self.mllp.start()
        loop = asyncio.get_running_loop()
        self.dicom.on_queued = lambda: loop.call_soon_threadsafe(self.outbox.wake)
        await self.outbox.start()
        await asyncio.to_thread(self.dicom.start)
        event(log, "broker_ready", database=str(self.writer.path),
              mllp_port=self.mllp.bound_port, dicom_port=self.dicom.bound_port,
              seconds=round(time.perf_counter() - started, 3))

    async def stop(self) -> None:
        event(log, "broker_stopping")
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
            signal.SIGHUP, lambda: loop.run_in_executor(None, self.mappings.reload))
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
                       mpps_match_accession=d.mpps_match_accession)
