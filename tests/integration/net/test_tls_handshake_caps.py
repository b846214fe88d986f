"""Connections stalled in the TLS handshake count against the per-address and total caps from
TCP accept, on MLLP and on admin, against the real ``mwl-broker serve`` (review F2 of #11):
bare TCP connections that never send a ClientHello stop at the caps, are refused at once past
them, another address is still served, and a failed handshake gives its slot back."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from broker.hl7.mllp import Frame, Framer, frame
from tests.support.broker import BrokerProcess, wait_for_port
from tests.support.certs import Pki, make_pki
from tests.support.samples import order

OTHER = "127.0.0.2"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[BrokerProcess]:
    # a long handshake timeout: the held handshakes must outlast the test on a busy machine
    tls = (f"{{enabled: true, cert_file: '{pki.server.cert}', key_file: '{pki.server.key}', "
           "handshake_timeout: 60}")
    proc = BrokerProcess(tmp_path, (
        f"mllp.tls={tls}", f"admin.tls={tls}", "admin.token=s3cret",
        "mllp.max_connections_per_address=3", "mllp.max_connections=5",
        "admin.max_connections_per_address=2", "admin.max_connections=4"))
    proc.start()
    wait_for_port(proc.admin_port, proc=proc.proc)
    wait_for_port(proc.port, proc=proc.proc)
    try:
        yield proc
    finally:
        proc.stop()


def bare(port: int, source: str) -> socket.socket:
    """A TCP connection that never starts its TLS handshake."""
    return socket.create_connection(("127.0.0.1", port), timeout=5.0, source_address=(source, 0))


def closed_at_once(sock: socket.socket) -> bool:
    sock.settimeout(1.5)
    try:
        return sock.recv(1 << 16) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def tls_client(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca))


def mllp_over_tls(port: int, pki: Pki, source: str = "127.0.0.1") -> str:
    with tls_client(pki).wrap_socket(bare(port, source), server_hostname="localhost") as sock:
        sock.sendall(frame(order(1).encode()))
        framer = Framer()
        while True:
            data = sock.recv(1 << 16)
            assert data, "closed without an answer"
            for item in framer.feed(data):
                if isinstance(item, Frame):
                    return item.payload.decode("latin-1").split("\r")[1].split("|")[1]


def https_login_form(port: int, pki: Pki, source: str = "127.0.0.1") -> bytes:
    with tls_client(pki).wrap_socket(bare(port, source), server_hostname="localhost") as sock:
        sock.sendall(b"GET /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return sock.recv(1 << 16)


def released(broker: BrokerProcess, listener: str, seconds: float = 10.0) -> None:
    """Wait until the broker has logged the end of the connection from 127.0.0.1."""
    ended = "event=mllp_disconnected peer=127.0.0.1:" if listener == "mllp" else None
    deadline = time.monotonic() + seconds
    while ended is not None and ended not in broker.log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no {ended!r} in the broker's log"
        time.sleep(0.02)


@pytest.mark.parametrize(("listener", "per_address", "total"), [("mllp", 3, 5), ("admin", 2, 4)])
def test_handshaking_connections_count_against_the_caps(
        tls_broker: BrokerProcess, pki: Pki, listener: str, per_address: int, total: int) -> None:
    port = tls_broker.port if listener == "mllp" else tls_broker.admin_port

    def served(source: str) -> bool:
        if listener == "mllp":
            return mllp_over_tls(port, pki, source) == "AA"
        return b"200 OK" in https_login_form(port, pki, source)

    with ExitStack() as held:
        kept = [held.enter_context(bare(port, OTHER)) for _ in range(per_address)]
        extra = [held.enter_context(bare(port, OTHER)) for _ in range(3)]
        assert all(closed_at_once(s) for s in extra)  # refused at accept, not after 10 s
        assert not any(closed_at_once(s) for s in kept[:1])
        assert served("127.0.0.1")  # another address is still served
        # its slot comes back when the broker sees the close, just after the client got its answer
        released(tls_broker, listener)
        # the total cap counts handshaking connections too
        more = [held.enter_context(bare(port, "127.0.0.3"))
                for _ in range(total - per_address)]
        assert not closed_at_once(more[0])
        assert closed_at_once(held.enter_context(bare(port, "127.0.0.4")))
    # closed handshakes give their slots back
    for _ in range(50):
        try:
            if served(OTHER):
                break
        except (OSError, AssertionError):
            pass
        time.sleep(0.1)
    else:
        raise AssertionError(f"{OTHER} is still refused after its handshakes ended")
