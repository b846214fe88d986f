"""The UPS-RS event channel (PS3.18 8.10.4 Open Notification Connection, 8.10.5 Send Event
Report): a WebSocket per subscriber AE, fed by a hub that tails ``ups_events`` — the reports
queued in the transaction of each change, from any source (UPS-RS, DIMSE, MPPS, HL7) and any
broker of a shared database — and marks each one sent after it went out. Reports for an AE
that is not connected wait in the table and go out, oldest first, when it connects."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, web

from broker.dicom.dicom_json import event_report
from broker.logs import event
from broker.store.connection import AsyncSql
from broker.store.dialect import Dialect
from broker.store.errors import StoreError
from broker.store.ups_events import WaitingEvent, waiting_events

log = logging.getLogger("broker.ups")
#: the admin side's read connection and its dialect
ReadConnection = Callable[[], tuple[AsyncSql, Dialect]]
#: marks reports sent (a writer job): their row ids
Settle = Callable[[list[int]], Awaitable[Any]]
#: seconds between looks at the table while a socket is open, and after a store error
POLL = 0.15
RETRY = 1.0
BATCH = 200


class EventHub:
    """The open sockets by AE title, and the task that sends them their waiting reports."""

    def __init__(self, read: ReadConnection, settle: Settle, charset: str = "ISO_IR 192",
                 poll: float = POLL, batch: int = BATCH) -> None:
        self.read = read
        self.settle = settle
        self.charset = charset
        self.poll = poll
        self.batch = batch
        self.sent = 0
        self._sockets: dict[str, set[web.WebSocketResponse]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> dict[str, int]:
        """AE title → open sockets."""
        return {ae: len(s) for ae, s in self._sockets.items() if s}

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ups-event-hub")

    async def stop(self) -> None:
        """Close every socket (going away), then stop the task."""
        for sockets in list(self._sockets.values()):
            for ws in list(sockets):
                with contextlib.suppress(Exception):
                    await ws.close(code=WSCloseCode.GOING_AWAY, message=b"broker stopping")
        self._sockets.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        """Look for reports now (a change was committed); from the event loop only."""
        if self._sockets:
            self._wake.set()

    def attach(self, ae_title: str, ws: web.WebSocketResponse) -> None:
        self._sockets.setdefault(ae_title, set()).add(ws)
        self._wake.set()

    def detach(self, ae_title: str, ws: web.WebSocketResponse) -> None:
        sockets = self._sockets.get(ae_title)
        if sockets is not None:
            sockets.discard(ws)
            if not sockets:
                del self._sockets[ae_title]

    async def _run(self) -> None:
        while True:
            try:
                sent = await self.deliver()
            except StoreError as exc:
                event(log, "ups_events_unreadable", logging.WARNING, error=str(exc))
                await asyncio.sleep(RETRY)
                continue
            except Exception as exc:  # the hub outlives any one report or socket
                event(log, "ups_event_hub_failed", logging.ERROR, error=type(exc).__name__)
                await asyncio.sleep(RETRY)
                continue
            if sent:
                continue  # a full batch may have more behind it
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll if self._sockets else None):
                    await self._wake.wait()

    async def deliver(self) -> int:
        """Send the waiting reports of the connected AEs, oldest first; returns how many."""
        if not self._sockets:
            return 0
        conn, dialect = self.read()
        waiting = await waiting_events(conn, list(self._sockets), self.batch, dialect)
        settled: list[int] = []
        for report in waiting:
            sockets = [ws for ws in self._sockets.get(report.receiving_ae, ()) if not ws.closed]
            if sockets and await self._send(report, sockets):
                settled.append(report.id)
        if settled:
            await self.settle(settled)
            self.sent += len(settled)
        return len(settled)

    async def _send(self, report: WaitingEvent, sockets: list[web.WebSocketResponse]) -> bool:
        """Send one report to each socket; True when it went out (or can never go: a
        report that cannot be encoded is logged and settled, not retried for ever)."""
        try:
            text = json.dumps(event_report(report.event_type, report.sop_instance_uid,
                                           report.payload.get("info") or {}, self.charset),
                              ensure_ascii=False)
        except Exception as exc:
            event(log, "ups_event_unencodable", logging.ERROR, event_id=report.id,
                  receiving_ae=report.receiving_ae, error=type(exc).__name__)
            return True
        out = False
        for ws in sockets:
            try:
                await ws.send_str(text)
                out = True
            except (ConnectionError, RuntimeError):  # closed under us: it waits for the next
                self.detach(report.receiving_ae, ws)
        if out:
            event(log, "ups_event_sent", receiving_ae=report.receiving_ae,
                  sop_instance_uid=report.sop_instance_uid, event_type=report.event_type,
                  channel="websocket")
        return out


async def open_channel(hub: EventHub, request: web.Request, ae_title: str) -> web.StreamResponse:
    """Serve one subscriber's WebSocket until it closes (messages from the client are
    ignored). A page of another site may not open it (its Origin must be this server)."""
    origin = request.headers.get("Origin")
    if origin and urlsplit(origin).netloc.lower() != request.host.lower():
        return web.json_response({"error": "cross-site WebSocket refused (its Origin is "
                                  "not this server)"}, status=403)
    ws = web.WebSocketResponse(heartbeat=30.0)
    if not ws.can_prepare(request).ok:
        return web.json_response({"error": "this is the WebSocket of AE title "
                                  f"{ae_title!r}: open it with a WebSocket client"},
                                 status=400)
    await ws.prepare(request)
    hub.attach(ae_title, ws)
    event(log, "ups_channel_open", receiving_ae=ae_title, peer=request.remote or "?")
    try:
        async for _ in ws:
            pass
    finally:
        hub.detach(ae_title, ws)
        event(log, "ups_channel_closed", receiving_ae=ae_title)
    return ws
