"""The asyncio MLLP listener: framing, limits, idle and frame timeouts, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from broker.audit.trail import AuditTrail, DisabledAuditTrail
from broker.hl7.mllp import FILLER, Frame, Framer, Garbage, Oversize, frame
from broker.logs import event
from broker.model.ports import Hl7Handler, OversizeHandler
from broker.net.allow import AddressAllowList
from broker.net.peer_limits import PerAddressLimit
from broker.net.tcp import acknowledge_now
from broker.net.tls import handshake_reason, peer_subject
from broker.net.tls_listener import TlsListener

if TYPE_CHECKING:
    from broker.metrics import Metrics

log = logging.getLogger("broker.mllp")


@dataclass(eq=False)
class _Connection:
    peer: str
    writer: asyncio.StreamWriter
    task: asyncio.Task[None] | None = None
    busy: bool = False
    idle: asyncio.Event = field(default_factory=asyncio.Event)


class MllpServer:
    def __init__(self, handler: Hl7Handler, oversize: OversizeHandler, *, host: str, port: int,
                 max_frame: int = 1 << 20, idle_timeout: float = 300.0,
                 max_connections: int = 200, ssl_context: ssl.SSLContext | None = None,
                 handshake_timeout: float = 10.0,
                 allowed_addresses: AddressAllowList | None = None,
                 max_connections_per_address: int = 20, frame_timeout: float = 30.0,
                 metrics: Metrics | None = None, audit: AuditTrail | None = None) -> None:
        self.handler = handler
        self.oversize = oversize
        self.host, self.port = host, port
        self.max_frame = max_frame
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        self.allowed_addresses = allowed_addresses
        #: open connections per source address (``mllp.max_connections_per_address``)
        self.per_address = PerAddressLimit(max_connections_per_address)
        #: seconds from a frame's start block to its end block (0: no deadline)
        self.frame_timeout = frame_timeout
        self._server: asyncio.Server | TlsListener | None = None
        self._connections: set[_Connection] = set()
        #: connections counted against max_connections (TLS ones from TCP accept)
        self._held = 0
        self._stopping = False
        self.refused = 0
        self.metrics = metrics
        self.audit = audit or DisabledAuditTrail()

    @property
    def bound_port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def active_connections(self) -> int:
        return len(self._connections)

    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    def _rejected(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.rejected("mllp", reason)

    def _admitted(self, host: str, port: int) -> bool:
        """The source address is on ``mllp.allowed_addresses`` (else logged and counted)."""
        if self.allowed_addresses is None or self.allowed_addresses.allows(host):
            return True
        self.refused += 1
        self._rejected("address_not_allowed")
        event(log, "mllp_connection_refused", logging.WARNING, peer=f"{host}:{port}",
              reason=f"address not in {self.allowed_addresses.setting}")
        self.audit.security_alert("address_not_allowed", f"{host}:{port}",
                                  f"not in {self.allowed_addresses.setting}", listener="mllp")
        return False

    def _admitted_tls(self, host: str, port: int) -> bool:
        """At TCP accept, before the handshake: allowed, and counted against the caps."""
        if not self._admitted(host, port):
            return False
        refusal = self._take_slot(host)
        if refusal is not None:
            self._count_refusal(f"{host}:{port}", *refusal)
            return False
        return True

    def _take_slot(self, address: str) -> tuple[str, str] | None:
        """Count a connection against the per-address and total caps; else (reason, text)."""
        if not self.per_address.acquire(address):
            return ("per_address_cap", f"mllp.max_connections_per_address "
                    f"{self.per_address.per_address} reached by {address}")
        if self._held >= self.max_connections:
            self.per_address.release(address)
            return "max_connections", f"max_connections {self.max_connections} reached"
        self._held += 1
        return None

    def _give_slot(self, address: str) -> None:
        self.per_address.release(address)
        self._held -= 1

    def _handshake_failed(self, peer: str, exc: BaseException) -> None:
        self._rejected("tls_handshake")
        event(log, "mllp_tls_refused", logging.WARNING, peer=peer, reason=handshake_reason(exc))
        self.audit.security_alert("tls_handshake", peer, handshake_reason(exc), listener="mllp")

    async def start(self) -> None:
        if self.ssl_context is None:
            self._server = await asyncio.start_server(
                self._accept, self.host, self.port, limit=1 << 16)
        else:
            listener = TlsListener(self._accept, self.ssl_context,
                                   handshake_timeout=self.handshake_timeout,
                                   admit=self._admitted_tls, on_refused=self._handshake_failed,
                                   release=lambda host, _port: self._give_slot(host))
            await listener.start(self.host, self.port)
            self._server = listener
        event(log, "mllp_listening", host=self.host, port=self.bound_port,
              tls=self.ssl_context is not None)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting; finish the message each connection is processing, then close."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        connections = list(self._connections)
        for conn in connections:
            if not conn.busy and conn.task is not None:
                conn.task.cancel()
        busy = [c.idle.wait() for c in connections if c.busy]
        if busy:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.gather(*busy)
        for conn in connections:
            if conn.task is not None and not conn.task.done():
                conn.task.cancel()
        tasks = [c.task for c in connections if c.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        event(log, "mllp_stopped", abandoned=sum(1 for c in connections if c.busy))

    def _refuse(self, writer: asyncio.StreamWriter, peer: str, reason: str, text: str) -> None:
        """Close a connection at once; logged and counted by ``reason``."""
        self._count_refusal(peer, reason, text)
        writer.close()

    def _count_refusal(self, peer: str, reason: str, text: str) -> None:
        self.refused += 1
        self._rejected(reason)
        event(log, "mllp_connection_refused", logging.WARNING, peer=peer, reason=text)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if peername else "?"
        address = str(peername[0]) if peername else "?"
        tls = self.ssl_context is not None  # counted at TCP accept (_admitted_tls)
        if not tls:
            if peername and not self._admitted(*peername[:2]):
                writer.close()
                return
            if self._stopping:
                self._refuse(writer, peer, "shutting_down", "shutting down")
                return
            if (refusal := self._take_slot(address)) is not None:
                self._refuse(writer, peer, *refusal)
                return
        try:
            if self._stopping:
                self._refuse(writer, peer, "shutting_down", "shutting down")
                return
            await self._serve_connection(reader, writer, peer)
        finally:
            self._give_slot(address)

    async def _serve_connection(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter, peer: str) -> None:
        conn = _Connection(peer, writer, asyncio.current_task())
        conn.idle.set()
        self._connections.add(conn)
        event(log, "mllp_connected", peer=peer, connections=len(self._connections),
              **_tls_fields(writer))
        try:
            await self._serve(conn, reader)
        except asyncio.CancelledError:
            pass
        except (ConnectionError, ssl.SSLError) as exc:
            event(log, "mllp_connection_error", logging.WARNING, peer=peer, error=str(exc))
        finally:
            self._connections.discard(conn)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            event(log, "mllp_disconnected", peer=peer)

    async def _serve(self, conn: _Connection, reader: asyncio.StreamReader) -> None:
        framer = Framer(self.max_frame)
        loop = asyncio.get_running_loop()
        frame_started: float | None = None  # loop time of the unfinished frame's start block
        # between frames the idle time runs from the connection's start or its last answer:
        # bytes outside a frame (filler, garbage) do not keep a connection open; inside a
        # frame it runs from the last read, and the whole frame has mllp.frame_timeout
        idle_since = loop.time()
        garbage = _GarbageReport()
        sock = conn.writer.get_extra_info("socket")
        while not self._stopping:
            now = loop.time()
            if frame_started is None:
                idle_left = idle_since + self.idle_timeout - now
            else:
                idle_left = self.idle_timeout
            wait = idle_left
            if frame_started is not None and self.frame_timeout > 0:
                wait = min(wait, frame_started + self.frame_timeout - now)
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    data = await reader.read(65536)
            except TimeoutError:
                if wait < idle_left:
                    self._rejected("frame_timeout")
                    event(log, "mllp_frame_timeout", logging.WARNING, peer=conn.peer,
                          seconds=self.frame_timeout, unfinished_frame_bytes=framer.pending,
                          reason="the frame did not end within mllp.frame_timeout; "
                          "connection closed, nothing of it processed")
                else:
                    event(log, "mllp_idle_timeout", peer=conn.peer, seconds=self.idle_timeout,
                          unfinished_frame_bytes=framer.pending)
                return
            if not data:
                if framer.pending:
                    event(log, "mllp_unterminated_frame", logging.WARNING, peer=conn.peer,
                          bytes=framer.pending)
                return
            acknowledge_now(sock)  # a sender writing a frame in pieces with Nagle on
            read_at = loop.time()
            items = framer.feed(data)
            if not framer.in_frame:
                frame_started = None
            elif frame_started is None or any(isinstance(i, Frame) for i in items):
                frame_started = read_at  # a new frame began in this chunk
            for item in items:
                if isinstance(item, Garbage):
                    self._rejected("garbage")
                    repeats = garbage.due(read_at, len(item.data))
                    if repeats is not None:
                        event(log, "mllp_garbage", logging.WARNING, peer=conn.peer,
                              bytes=len(item.data), looks_like=looks_like(item.data),
                              **repeats)
                elif isinstance(item, Oversize):
                    self._rejected("frame_too_large")
                    event(log, "mllp_frame_too_large", logging.WARNING, peer=conn.peer,
                          limit=self.max_frame, received=item.size)
                    conn.writer.write(frame(self.oversize(item.head, item.size)))
                    await conn.writer.drain()
                    await _lingering_close(conn.writer, reader)
                    return
                elif isinstance(item, Frame):
                    conn.busy = True
                    conn.idle.clear()
                    try:
                        ack = await self.handler(item.payload, conn.peer)
                        conn.writer.write(frame(ack))
                        await conn.writer.drain()
                    finally:
                        conn.busy = False
                        conn.idle.set()
                    idle_since = loop.time()
                    if self._stopping:
                        return


class _GarbageReport:
    """At most one ``mllp_garbage`` line per connection every ``every`` seconds: a peer
    sending bytes outside frames cannot flood the log (each is still counted in metrics)."""

    __slots__ = ("bytes", "chunks", "every", "last")

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.last: float | None = None
        self.chunks = self.bytes = 0

    def due(self, now: float, size: int) -> dict[str, int] | None:
        """The fields of the line to write now (what was left unlogged since the last one),
        or None to stay silent."""
        if self.last is not None and now - self.last < self.every:
            self.chunks += 1
            self.bytes += size
            return None
        fields = ({"unlogged_chunks": self.chunks, "unlogged_bytes": self.bytes}
                  if self.chunks else {})
        self.last, self.chunks, self.bytes = now, 0, 0
        return fields


def looks_like(data: bytes) -> str:
    """What bytes outside a frame seem to be, without quoting them (they may hold patient
    data: a message sent without MLLP framing)."""
    head = data.lstrip(bytes(FILLER))
    if head.startswith(b"MSH") or head.startswith(b"FHS") or head.startswith(b"BHS"):
        return "hl7_without_mllp_start_block"
    if head[:1] == b"\x16" and head[1:2] == b"\x03":
        return "tls_client_hello"
    if head.split(b" ", 1)[0] in (b"GET", b"POST", b"HEAD", b"PUT", b"OPTIONS"):
        return "http_request"
    return "unknown"


def _tls_fields(writer: asyncio.StreamWriter) -> dict[str, Any]:
    """The TLS version and the client certificate's name of a TLS connection."""
    ssl_object = writer.get_extra_info("ssl_object")
    if ssl_object is None:
        return {}
    return {"tls": str(ssl_object.version()),
            "client_cert": peer_subject(ssl_object.getpeercert()) or "-"}


async def _lingering_close(writer: asyncio.StreamWriter, reader: asyncio.StreamReader,
                           seconds: float = 2.0) -> None:
    """Half-close, then read and discard what the peer still sends for a moment, so that the
    answer already written is not destroyed by a reset (closing with unread input sends RST).
    """
    with contextlib.suppress(OSError, RuntimeError):
        writer.write_eof()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    with contextlib.suppress(TimeoutError, ConnectionError):
        while (left := deadline - loop.time()) > 0:
            async with asyncio.timeout(left):
                if not await reader.read(1 << 16):
                    break
