"""An asyncio TLS listener that awaits each handshake itself.

``asyncio.start_server(ssl=...)`` drops a connection whose handshake fails without telling
the application. This listener accepts the TCP connection, asks ``admit`` about the source
address (which may count the connection against per-address and total caps from this moment,
the handshake included), then runs the handshake (bounded by a timeout): a failure is handed
to ``on_refused`` with the peer and the reason, ``release`` gives back what ``admit`` took,
and the listener keeps serving. A connection that completes the handshake goes to
``on_connection`` as a (reader, writer) pair, as with ``asyncio.start_server``, or to a
protocol from ``protocol_factory``; from then on its owner releases it. Works on asyncio's loop
and on uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable

from broker.logs import event

log = logging.getLogger("broker.tls")

ConnectionHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
#: (peer address, peer port) → whether the connection may go on
Admit = Callable[[str, int], bool]
#: (peer 'host:port', the exception of the failed handshake)
Refused = Callable[[str, BaseException], None]
#: (peer address, peer port) of an admitted connection whose handshake did not complete
Release = Callable[[str, int], None]


class TlsListener:
    def __init__(self, on_connection: ConnectionHandler | None, ssl_context: ssl.SSLContext, *,
                 handshake_timeout: float = 10.0, limit: int = 1 << 16,
                 admit: Admit | None = None, on_refused: Refused | None = None,
                 release: Release | None = None,
                 protocol_factory: Callable[[], asyncio.BaseProtocol] | None = None,
                 backlog: int = 100) -> None:
        if (on_connection is None) == (protocol_factory is None):
            raise ValueError("a TLS listener takes on_connection or protocol_factory")
        self.on_connection = on_connection
        self.protocol_factory = protocol_factory
        self.release = release
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        self.limit = limit
        self.admit = admit
        self.on_refused = on_refused
        self.backlog = backlog
        self._sock: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self._sock,) if self._sock is not None else ()

    def is_serving(self) -> bool:
        return self._acceptor is not None and not self._acceptor.done()

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        self._sock = socket.create_server(address[:2] if family == socket.AF_INET else address,
                                          family=family, backlog=self.backlog)
        self._sock.setblocking(False)
        self._acceptor = asyncio.create_task(self._accept_loop(), name="tls-acceptor")

    def close(self) -> None:
        """Stop accepting; handshakes under way are abandoned."""
        if self._acceptor is not None:
            self._acceptor.cancel()
        for task in list(self._handshakes):
            task.cancel()
        if self._sock is not None:
            self._sock.close()

    async def wait_closed(self) -> None:
        tasks = [t for t in (self._acceptor, *self._handshakes) if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept_loop(self) -> None:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, address = await loop.sock_accept(self._sock)
            except OSError as exc:  # out of file descriptors …: breathe, then go on
                event(log, "tls_accept_failed", logging.ERROR, error=str(exc))
                await asyncio.sleep(1.0)
                continue
            host, port = str(address[0]), int(address[1])
            if self.admit is not None and not self.admit(host, port):
                conn.close()
                continue
            task = asyncio.create_task(self._handshake(conn, host, port))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, conn: socket.socket, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        protocol: asyncio.BaseProtocol
        if self.protocol_factory is not None:
            protocol = self.protocol_factory()
        else:
            assert self.on_connection is not None
            protocol = asyncio.StreamReaderProtocol(asyncio.StreamReader(limit=self.limit),
                                                    self.on_connection)
        try:
            await loop.connect_accepted_socket(
                lambda: protocol, conn, ssl=self.ssl_context,
                ssl_handshake_timeout=self.handshake_timeout)
        except asyncio.CancelledError:
            conn.close()
            if self.release is not None:
                self.release(host, port)
            raise
        except Exception as exc:  # a failed handshake ends this connection, never the listener
            with contextlib.suppress(OSError):
                conn.close()
            if self.release is not None:
                self.release(host, port)
            if self.on_refused is not None:
                self.on_refused(f"{host}:{port}", exc)
