"""Per-address slots and negotiation deadlines of the DICOM listener."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import A_ASSOCIATE

from broker.dicom.admission import LOCAL_LIMIT_EXCEEDED, Admission, cut, refuse_busy
from broker.net.peer_limits import PerAddressLimit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made: list[tuple[socket.socket, socket.socket]] = []
    yield made
    for a, b in made:
        a.close()
        b.close()


def pair(made: list[tuple[socket.socket, socket.socket]]) -> tuple[socket.socket, socket.socket]:
    made.append(socket.socketpair())
    return made[-1]


def test_an_address_holds_at_most_its_cap(pairs: list[tuple[socket.socket,
                                                             socket.socket]]) -> None:
    admission = Admission(PerAddressLimit(2), 10.0)
    first = admission.admit(pair(pairs)[0], ("10.0.0.1", 1000))
    second = admission.admit(pair(pairs)[0], ("10.0.0.1", 1001))
    assert first is not None and second is not None
    assert admission.admit(pair(pairs)[0], ("10.0.0.1", 1002)) is None
    assert admission.admit(pair(pairs)[0], ("10.0.0.2", 1000)) is not None
    admission.release(first)
    admission.release(first)  # once only: the second slot stays taken
    assert admission.held("10.0.0.1") == 1
    assert admission.admit(pair(pairs)[0], ("10.0.0.1", 1003)) is not None
    assert admission.admit(pair(pairs)[0], ("10.0.0.1", 1004)) is None


def test_connections_without_a_request_are_overdue_once(
        pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    clock = Clock()
    admission = Admission(PerAddressLimit(0), 5.0, clock)
    bare = admission.admit(pair(pairs)[0], ("10.0.0.1", 1))
    requested = admission.admit(pair(pairs)[0], ("10.0.0.1", 2))
    ended = admission.admit(pair(pairs)[0], ("10.0.0.1", 3))
    assert bare is not None and requested is not None and ended is not None
    requested.assoc = Association(AE(), "acceptor")
    requested.assoc.requestor.primitive = A_ASSOCIATE()
    bare.assoc = Association(AE(), "acceptor")  # its association waits for a request
    admission.release(ended)
    clock.now += 4.9
    assert admission.overdue() == []
    late = admission.admit(pair(pairs)[0], ("10.0.0.1", 4))
    clock.now += 0.1
    assert admission.overdue() == [bare] and bare.cut
    assert admission.overdue() == []
    clock.now += 5.0
    assert admission.overdue() == [late]


def test_a_refused_connection_reads_local_limit_exceeded() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=5)
        server, _ = listener.accept()
        with client, server:
            client.sendall(b"\x01\x00\x00\x00\x00\x10" + bytes(16))  # some request
            refuse_busy(server)
            server.close()
            assert client.recv(64) == LOCAL_LIMIT_EXCEEDED
            assert client.recv(64) == b""


def test_cut_wakes_a_reader_and_ignores_a_closed_socket() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        cut(ours)
        assert ours.recv(1) == b""  # a reader blocked on it would get this too
        assert theirs.recv(1) == b""
    cut(ours)  # closed: nothing happens
