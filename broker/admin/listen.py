"""The admin listener: aiohttp's request handler behind a gate that caps connections (in all
and per source address) and gives each request head a deadline (slowloris).

aiohttp closes idle keep-alive connections but has no deadline for a request head that
trickles in; the gate's timer runs from the moment a connection is ready for a request (it
opened, or its previous request was answered) until a request reaches the handlers, and
aborts the connection when it fires.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable
from typing import cast

from aiohttp import web

from broker.admin.auth import Handler
from broker.logs import event
from broker.metrics import Metrics
from broker.net.peer_limits import PerAddressLimit
from broker.net.tls_listener import TlsListener

log = logging.getLogger("broker.admin")
#: seconds a refused client has to read its 503 before the connection is aborted
LINGER = 2.0


def _refusal(text: str) -> bytes:
    """A whole HTTP/1.1 503 answer, written before the connection is closed."""
    body = json.dumps({"error": text}).encode()
    head = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 5\r\nConnection: close\r\n"
            "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\r\n")
    return head.encode() + body


class ConnectionGate:
    """The slots and deadlines shared by every connection of one admin listener."""

    def __init__(self, max_connections: int, per_address: int, read_timeout: float,
                 metrics: Metrics) -> None:
        self.max_connections = max_connections
        self.per_address = PerAddressLimit(per_address)
        self.read_timeout = read_timeout
        self.metrics = metrics
        self._open: dict[asyncio.BaseTransport, _GatedConnection] = {}
        #: connections holding a slot: open ones and, under TLS, those still in the handshake
        self._held = 0

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def admit(self, address: str) -> str:
        """'' when a connection from ``address`` may go on, else why it may not."""
        if self._held >= self.max_connections:
            return (f"the admin server holds its {self.max_connections} connections "
                    "(admin.max_connections); try again shortly")
        if not self.per_address.acquire(address):
            return (f"{address} holds {self.per_address.per_address} connections already "
                    "(admin.max_connections_per_address)")
        self._held += 1
        return ""

    def admit_tls(self, address: str, port: int) -> bool:
        """At TCP accept, before the handshake: a refused connection is closed unanswered."""
        refusal = self.admit(address)
        if refusal:
            self.refused(address, _reason(refusal), refusal)
        return not refusal

    def abandon(self, address: str, port: int = 0) -> None:
        """An admitted connection ended before it opened (its TLS handshake failed)."""
        self.per_address.release(address)
        self._held -= 1

    def track(self, transport: asyncio.BaseTransport, connection: _GatedConnection) -> None:
        self._open[transport] = connection

    def untrack(self, transport: asyncio.BaseTransport, address: str) -> None:
        """A connection the gate admitted has ended: its slots are free again."""
        self._open.pop(transport, None)
        self.abandon(address)

    def refused(self, address: str, reason: str, text: str) -> None:
        self.metrics.rejected("admin", reason)
        event(log, "admin_connection_refused", logging.WARNING, peer=address, reason=reason,
              detail=text)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Stops the head deadline while a request is handled, starts it again after."""
        connection = self._open.get(request.transport) if request.transport else None
        if connection is not None:
            connection.busy(True)
        try:
            return await handler(request)
        finally:
            if connection is not None:
                connection.busy(False)


def _reason(refusal: str) -> str:
    return "connection_cap" if refusal.startswith("the admin server") else "address_cap"


class _GatedConnection(asyncio.Protocol):
    """Forwards to aiohttp's RequestHandler once the gate admitted the connection (under TLS
    the gate admitted it at TCP accept: ``admitted``)."""

    def __init__(self, gate: ConnectionGate, make_handler: Callable[[], asyncio.Protocol],
                 admitted: bool = False) -> None:
        self.gate = gate
        self.admitted = admitted
        self.make_handler = make_handler
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.address = "?"
        self._active = 0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio subclass
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if peer else "?"
        refusal = "" if self.admitted else self.gate.admit(self.address)
        if refusal:
            self.gate.refused(self.address, _reason(refusal), refusal)
            self._answer_and_close(transport, _refusal(refusal))
            return
        self.transport = transport
        self.gate.track(transport, self)
        self._arm()
        self.inner = self.make_handler()
        self.inner.connection_made(transport)

    def _answer_and_close(self, transport: asyncio.Transport, answer: bytes) -> None:
        """Write the answer, then close without a reset: a close with the client's request
        still unread would send a TCP RST, and the client could lose the answer. What it
        sends from now on is discarded; it gets a moment to read and close."""
        transport.write(answer)
        if transport.can_write_eof():
            transport.write_eof()
            self._timer = asyncio.get_running_loop().call_later(LINGER, transport.abort)
        else:
            transport.close()

    def busy(self, started: bool) -> None:
        self._active += 1 if started else -1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._active <= 0:
            self._arm()

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.gate.read_timeout, self._expired)

    def _expired(self) -> None:
        self._timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.gate.refused(self.address, "read_timeout",
                              f"no whole request within {self.gate.read_timeout:g} s "
                              "(admin.request_read_timeout)")
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.inner is None:
            return
        assert self.transport is not None
        self.gate.untrack(self.transport, self.address)
        self.inner.connection_lost(exc)


class GatedSite(web.BaseSite):
    """A TCP (or TLS) site whose connections go through a :class:`ConnectionGate`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, gate: ConnectionGate,
                 ssl_context: ssl.SSLContext | None = None,
                 handshake_timeout: float = 10.0) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self.host, self.port = host, port
        self.gate = gate
        self.handshake_timeout = handshake_timeout

    @property
    def name(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        if self._ssl_context is not None:  # the gate counts each connection from TCP accept
            listener = TlsListener(None, self._ssl_context,
                                   handshake_timeout=self.handshake_timeout,
                                   admit=self.gate.admit_tls, release=self.gate.abandon,
                                   protocol_factory=lambda: _GatedConnection(self.gate, server,
                                                                             admitted=True),
                                   backlog=128)
            await listener.start(self.host, self.port)
            self._server = cast(asyncio.Server, listener)
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _GatedConnection(self.gate, server), self.host, self.port, backlog=128)
