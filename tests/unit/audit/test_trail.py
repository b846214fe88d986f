"""broker.audit.trail, sender and transport over real loopback sockets: messages reach a
collector in order, wait in the spool while it is down, survive a restart, and a disabled
trail does nothing."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker.audit.trail import AuditTrail, DisabledAuditTrail, open_trail
from broker.config import AuditSettings, DatabaseSettings
from tests.support.audit import Collector, parse_syslog, split_octet_counted, validate
from tests.support.broker import free_port


def wait(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def settings(tmp_path: Path, port: int, transport: str = "tcp") -> AuditSettings:
    return AuditSettings(enabled=True, host="127.0.0.1", port=port, transport=transport,
                         timeout=2.0, backoff_base=0.05, backoff_max=0.2,
                         spool_directory=str(tmp_path / "spool"))


def trail(tmp_path: Path, port: int, transport: str = "tcp") -> AuditTrail:
    return open_trail(settings(tmp_path, port, transport), "node-1", "MWLBROKER",
                      DatabaseSettings(path=str(tmp_path / "broker.sqlite")))


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.close()


def users(messages: list[bytes]) -> list[str]:
    """The UserID of the first participant of each (user authentication) message."""
    out = []
    for raw in messages:
        doc = validate(parse_syslog(raw).xml)
        out.append(doc.find("ActiveParticipant").get("UserID"))
    return out


def test_messages_reach_the_repository_in_order_octet_counted(
        tmp_path: Path, collector: Collector) -> None:
    t = trail(tmp_path, collector.port)
    t.start()
    t.application_start()
    for n in range(20):
        t.user_authentication(f"user{n}", "10.0.0.1:5000", n % 2 == 0)
    wait(lambda: len(collector.messages()) == 21 and t.spool.count == 0)
    t.stop()
    messages = collector.messages()
    assert users(messages[1:]) == [f"user{n}" for n in range(20)]
    assert parse_syslog(messages[0]).msgid == "IHE+RFC-3881"
    assert [parse_syslog(m).pri for m in messages[1:3]] == [85, 84]
    assert collector.connections == 1
    assert not list((tmp_path / "spool").glob("*.msg"))


def test_messages_wait_while_the_repository_is_down_and_none_is_lost(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="broker.audit")
    port = free_port()
    t = trail(tmp_path, port)
    t.start()
    for n in range(5):
        t.user_authentication(f"user{n}", "10.0.0.1:5000", True)
    wait(lambda: any(r.msg == "audit_repository_down" for r in caplog.records))
    assert t.spool.count == 5
    server = socket.create_server(("127.0.0.1", port))
    collector = Collector.__new__(Collector)  # the same port, now listening
    collector.server, collector.port, collector.received = server, port, bytearray()
    collector.connections, collector._lock = 0, threading.Lock()
    threading.Thread(target=collector._accept, daemon=True).start()
    try:
        wait(lambda: len(collector.messages()) == 5)
        assert users(collector.messages()) == [f"user{n}" for n in range(5)]
        wait(lambda: any(r.msg == "audit_repository_up" for r in caplog.records))
    finally:
        t.stop()
        collector.close()


def test_what_is_spooled_at_stop_is_sent_after_the_restart(
        tmp_path: Path, collector: Collector) -> None:
    down = free_port()
    first = trail(tmp_path, down)
    first.start()
    first.application_start()
    first.user_authentication("before-restart", "10.0.0.1:5000", True)
    first.stop(grace=0.2)
    assert len(list((tmp_path / "spool").glob("*.msg"))) == 2
    second = trail(tmp_path, collector.port)
    second.start()
    second.user_authentication("after-restart", "10.0.0.1:5000", True)
    wait(lambda: len(collector.messages()) == 3)
    second.stop()
    assert users(collector.messages()) == ["node-1", "before-restart", "after-restart"]


def test_a_connection_the_repository_closed_is_reopened_before_sending(
        tmp_path: Path) -> None:
    """The repository restarts between two messages: its FIN is seen before the next write,
    so that message is not written into a dead connection."""
    server = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        for _ in range(2):  # read what the first connection sends, close it; then the next
            conn, _ = server.accept()
            with conn:
                conn.settimeout(5)
                data = b""
                while not data.endswith(b"</AuditMessage>"):
                    data += conn.recv(65536)
                received.extend(split_octet_counted(data))
                if len(received) == 1:
                    continue
                while chunk := conn.recv(65536):
                    data += chunk

    threading.Thread(target=serve, daemon=True).start()
    t = trail(tmp_path, server.getsockname()[1])
    t.start()
    try:
        t.user_authentication("first", "10.0.0.1:5000", True)
        wait(lambda: len(received) == 1)
        time.sleep(0.1)  # the repository's close reaches the broker
        t.user_authentication("second", "10.0.0.1:5000", True)
        wait(lambda: len(received) == 2)
        assert users(received) == ["first", "second"]
    finally:
        t.stop()
        server.close()


def test_udp_sends_one_message_per_datagram(tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    t = trail(tmp_path, sock.getsockname()[1], "udp")
    t.start()
    try:
        t.application_start()
        t.security_alert("address_not_allowed", "10.9.9.9:1234", "address not in list",
                         listener="mllp")
        datagrams = [sock.recv(65535), sock.recv(65535)]
        wait(lambda: t.spool.count == 0)
    finally:
        t.stop()
        sock.close()
    for datagram in datagrams:
        assert not datagram[:1].isdigit()  # no octet count over UDP
        validate(parse_syslog(datagram).xml)


def test_security_alerts_only_for_refusals_about_who_the_peer_is(
        tmp_path: Path, collector: Collector) -> None:
    t = trail(tmp_path, collector.port)
    t.start()
    for reason in ("per_address_cap", "negotiation_timeout", "tls_handshake",
                   "shutting_down", "calling_ae_not_allowed"):
        t.security_alert(reason, "10.9.9.9:1234", "why", listener="dicom")
    wait(lambda: len(collector.messages()) == 2)
    t.stop()
    descriptions = [validate(parse_syslog(m).xml).findtext(
        "EventIdentification/EventOutcomeDescription") for m in collector.messages()]
    assert descriptions == ["dicom: TLS handshake failed: why",
                            "dicom: calling AE title not allowed: why"]


def test_a_disabled_trail_does_nothing(tmp_path: Path) -> None:
    t = open_trail(AuditSettings(spool_directory=str(tmp_path / "spool")), "node-1", "AE",
                   DatabaseSettings(path=str(tmp_path / "broker.sqlite")))
    assert isinstance(t, DisabledAuditTrail) and not t.enabled
    t.start()
    t.application_start()
    t.user_authentication("admin", "10.0.0.1:1", False)
    t.query("CT01", "10.0.0.1:1", b"\x00", "1.2", "1.2.840.10008.1.2")
    t.security_alert("tls_handshake", "10.0.0.1:1", "x", listener="dicom")
    t.application_stop()
    t.stop()
    assert not (tmp_path / "spool").exists()
    assert not any(th.name == "audit-sender" for th in threading.enumerate())


def test_the_default_spool_is_beside_the_database(tmp_path: Path) -> None:
    t = open_trail(AuditSettings(enabled=True, transport="tcp"), "n", "AE",
                   DatabaseSettings(path=str(tmp_path / "var" / "broker.sqlite")))
    assert t.spool.directory == tmp_path / "var" / "audit-spool"


def test_recording_never_raises_into_the_caller(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    t = trail(tmp_path, free_port())  # never started: the spool is not open
    t.user_authentication("admin", "10.0.0.1:1", True)
    t.record(None)  # type: ignore[arg-type]
    assert [r.msg for r in caplog.records] == ["audit_record_failed"] * 2
    assert caplog.records[0].__dict__["fields"]["audit_event"] == "User Authentication"
