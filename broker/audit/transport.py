"""Sending syslog messages to the audit record repository: TLS (RFC 5425) and TCP (RFC 6587)
with octet counting, UDP (RFC 5426) one message per datagram. Blocking sockets, used by the
sender thread only.

A stream send returns once the repository's TCP has acknowledged every byte (the socket's
unsent-and-unacknowledged count is 0, Linux ``SIOCOUTQ``), and a connection the repository
closed is noticed before the next batch is written into it: a message is reported sent only
when it reached the repository's host. Syslog has no acknowledgement of its own, so a
repository that dies after its kernel acknowledged a message may still lose it."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import select
import socket
import ssl
import struct
import termios
import time
from collections.abc import Sequence
from typing import Protocol

from broker.audit.syslog import octet_counted
from broker.net.tls import handshake_reason


class TransportError(Exception):
    """The repository could not be reached or did not take the messages (retry later);
    the first ``sent`` messages of the batch went out before it failed."""

    def __init__(self, reason: str, sent: int = 0) -> None:
        super().__init__(reason)
        self.sent = sent


class MessageTooLarge(TransportError):
    """A message no datagram can carry (never retried)."""


class Transport(Protocol):
    name: str

    def send(self, messages: Sequence[bytes]) -> None:
        """Deliver the messages in order, or raise TransportError."""

    def close(self) -> None: ...


class StreamTransport:
    """TCP, or TLS when ``ssl_context`` is given; one connection, reopened after a failure."""

    def __init__(self, host: str, port: int, timeout: float,
                 ssl_context: ssl.SSLContext | None = None, server_hostname: str = "") -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname or host
        self.name = "tls" if ssl_context is not None else "tcp"
        self._sock: socket.socket | None = None

    def send(self, messages: Sequence[bytes]) -> None:
        sock = self._connection()
        try:
            sock.sendall(b"".join(octet_counted(m) for m in messages))
            self._acknowledged(sock)
        except OSError as exc:
            self.close()
            raise TransportError(_reason(exc)) from None

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def _connection(self) -> socket.socket:
        if self._sock is not None and _peer_closed(self._sock, self.timeout):
            self.close()
        if self._sock is None:
            try:
                sock = socket.create_connection((self.host, self.port), self.timeout)
            except OSError as exc:
                raise TransportError(f"cannot connect to {self.host}:{self.port}: "
                                     f"{_reason(exc)}") from None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                try:
                    sock = self.ssl_context.wrap_socket(sock,
                                                        server_hostname=self.server_hostname)
                except (OSError, ValueError) as exc:
                    sock.close()
                    raise TransportError(f"TLS handshake with {self.host}:{self.port} "
                                         f"failed: {handshake_reason(exc)}") from None
            self._sock = sock
        return self._sock

    def _acknowledged(self, sock: socket.socket) -> None:
        """Wait until the peer's TCP acknowledged all that was written (or fail)."""
        deadline = time.monotonic() + self.timeout
        pause = 0.0005
        while True:
            left = unacknowledged(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # after: a reset
            if error:  # empties the queue and sets the error at once
                raise ConnectionError(error, "connection reset by the repository")
            if not left:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{left} bytes not acknowledged within {self.timeout:g} s")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)


class UdpTransport:
    """One message per datagram; removed from the spool once the datagram left."""

    name = "udp"

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._sock: socket.socket | None = None
        self._address: tuple[str, int] | None = None

    def send(self, messages: Sequence[bytes]) -> None:
        if self._sock is None:
            try:
                info = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0]
            except OSError as exc:
                raise TransportError(f"cannot resolve {self.host}: {_reason(exc)}") from None
            self._sock = socket.socket(info[0], socket.SOCK_DGRAM)
            self._address = (str(info[4][0]), int(info[4][1]))
        assert self._address is not None
        for sent, msg in enumerate(messages):
            try:
                self._sock.sendto(msg, self._address)
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    raise MessageTooLarge(f"{len(msg)} bytes do not fit a datagram",
                                          sent) from None
                self.close()
                raise TransportError(_reason(exc), sent) from None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def unacknowledged(sock: socket.socket) -> int:
    """Bytes written to ``sock`` that its peer has not acknowledged yet (0 where the system
    cannot tell)."""
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    except (OSError, AttributeError):
        return 0
    return int(struct.unpack("i", raw)[0])


def _peer_closed(sock: socket.socket, timeout: float) -> bool:
    """Whether the repository closed the connection (a syslog receiver never sends, so
    anything to read is its end of the stream, an error, or a TLS session ticket)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    if not readable:
        return False
    try:
        sock.setblocking(False)
        return sock.recv(1) == b""
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
        return False
    except OSError:
        return True
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(timeout)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return handshake_reason(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
