"""The admin listener under misbehaving clients, against the real ``mwl-broker serve``: a
request head trickled in (slowloris) is cut at its deadline, a slow body gets 408, and the
connection caps (per source address, in all) refuse with 503 while other addresses are
still served. Loopback addresses 127.0.0.2/3 stand for other machines."""

from __future__ import annotations

import http.client
import re
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import BrokerProcess, wait_for_port
from tests.support.certs import make_pki


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path, ("admin.request_read_timeout=1",
                                    "admin.max_connections=3",
                                    "admin.max_connections_per_address=2"))
    proc.start()
    wait_for_port(proc.admin_port, proc=proc.proc)
    try:
        yield proc
    finally:
        proc.stop()


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5,
                                    source_address=(source, 0))
    return sock


def get(port: int, path: str = "/healthz", source: str = "127.0.0.1") -> bytes:
    """One whole request on its own connection; the whole answer."""
    with connect(port, source) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                     .encode())
        return read_all(sock)


def read_all(sock: socket.socket) -> bytes:
    data = b""
    for _ in range(1000):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (waits up to its timeout)."""
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_a_trickled_request_head_is_cut(limited: BrokerProcess) -> None:
    with connect(limited.admin_port) as sock:
        sock.settimeout(0.2)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        cut = False
        for n in range(100):  # one header line every 0.2 s: 20 s at most
            try:
                sock.sendall(f"X-Slow-{n}: x\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            if closed_by_server(sock):
                cut = True
                break
        assert cut, "the server still waits for the head after 100 trickled lines"
    assert b"200 OK" in get(limited.admin_port)
    assert 'reason="read_timeout"' in get(limited.admin_port, "/metrics").decode()
    assert "admin_connection_refused" in limited.log_text()


def test_an_idle_connection_is_closed_after_its_answer(limited: BrokerProcess) -> None:
    with connect(limited.admin_port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert b"200 OK" in sock.recv(65536)
        sock.settimeout(10)
        assert closed_by_server(sock)


def test_a_slow_body_gets_408(limited: BrokerProcess) -> None:
    with connect(limited.admin_port) as sock:
        sock.sendall(b"POST /api/outbox/purge HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: 200\r\n\r\nstate=del")
        sock.settimeout(10)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive within 1 s" in answer


def test_connection_caps_per_address_and_in_all(limited: BrokerProcess) -> None:
    port = limited.admin_port
    held = [connect(port), connect(port)]
    try:
        refused = get(port)  # a third from 127.0.0.1
        assert refused.startswith(b"HTTP/1.1 503"), refused
        assert b"127.0.0.1 holds 2 connections" in refused
        assert b"200 OK" in get(port, source="127.0.0.2")  # another address is served
        held.append(connect(port, "127.0.0.2"))
        full = get(port, source="127.0.0.3")
        assert full.startswith(b"HTTP/1.1 503") and b"holds its 3 connections" in full
        held.pop(0).close()
        for _ in range(50):  # the slot comes back once the server sees the close
            answer = get(port, source="127.0.0.3")
            if b"200 OK" in answer:
                break
        assert b"200 OK" in answer
    finally:
        for sock in held:
            sock.close()
    metrics = get(port, "/metrics").decode()
    assert 'reason="address_cap"' in metrics and 'reason="connection_cap"' in metrics


def test_admin_over_tls_under_serve(tmp_path: Path) -> None:
    """The real process (uvloop when installed): HTTPS, HSTS and a Secure session cookie."""
    pki = make_pki(tmp_path / "pki")
    proc = BrokerProcess(tmp_path, (
        "admin.token=s3cret", f"admin.tls={{enabled: true, cert_file: '{pki.server.cert}', "
        f"key_file: '{pki.server.key}'}}"))
    proc.start()
    try:
        wait_for_port(proc.admin_port, proc=proc.proc)
        trust = ssl.create_default_context(cafile=str(pki.ca))
        https = http.client.HTTPSConnection("127.0.0.1", proc.admin_port, timeout=10,
                                            context=trust)
        https.request("POST", "/login", body="token=s3cret&next=/outbox",
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
        answer = https.getresponse()
        answer.read()
        assert answer.status == 303
        assert re.search(r"(?i);\s*secure", answer.headers["Set-Cookie"])
        assert answer.headers["Strict-Transport-Security"].startswith("max-age=")
        https.close()
        plain = get(proc.admin_port)  # plain HTTP on the TLS port gets no answer
        assert b"HTTP/1.1 200" not in plain
    finally:
        proc.stop()
