"""One misbehaving MLLP peer cannot take the listener from the others (against ``serve``):
idle sockets from one address stop at ``mllp.max_connections_per_address``, and a frame that
trickles in is cut off at ``mllp.frame_timeout`` while another sender is served."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from broker.hl7.mllp import Frame, Framer, frame
from tests.support.broker import BrokerProcess, scraped_rejections
from tests.support.db import Db
from tests.support.samples import order

#: the whole of 127.0.0.0/8 is loopback: a second source address on this machine
OTHER = "127.0.0.2"
TRICKLED = (b"MSH|^~\\&|RIS|HOSP|MWLBROKER|RAD|20261122093000||ADT^A08|TRICKLE01|P|2.3.1\r"
            b"PID|||TRICKLEPID^^^HOSP||TRICKLE^NAME\r")


def connect_from(source: str, port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5.0,
                                    source_address=(source, 0))
    return sock


def closed_by_peer(sock: socket.socket, wait: float) -> bool:
    """Whether the broker closed ``sock`` within ``wait`` seconds (False: still open)."""
    sock.settimeout(wait)
    try:
        return sock.recv(1 << 16) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def exchange(port: int, payload: bytes, source: str = "127.0.0.1") -> bytes:
    """Send one framed message and return the payload of the answer."""
    with connect_from(source, port) as sock:
        sock.sendall(frame(payload))
        framer = Framer()
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            data = sock.recv(1 << 16)
            assert data, "the broker closed the connection without an answer"
            for item in framer.feed(data):
                if isinstance(item, Frame):
                    return item.payload
    raise AssertionError("no answer within 10 s")


def msa_code(ack: bytes) -> str:
    line = next(s for s in ack.decode("latin-1").split("\r") if s.startswith("MSA"))
    return line.split("|")[1]


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[BrokerProcess]:
    # a listener with room for 22 connections: today 25 idle sockets from one address fill it
    proc = BrokerProcess(tmp_path, ("mllp.max_connections=22", "mllp.frame_timeout=1"))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_idle_sockets_from_one_address_stop_at_its_cap(capped: BrokerProcess) -> None:
    cap = 20  # the default mllp.max_connections_per_address
    with ExitStack() as held:
        kept = [held.enter_context(connect_from(OTHER, capped.port)) for _ in range(cap)]
        extra = [held.enter_context(connect_from(OTHER, capped.port)) for _ in range(5)]
        assert all(closed_by_peer(s, 5.0) for s in extra)
        # the RIS, from another address, is answered while the 20 sockets are held
        assert msa_code(exchange(capped.port, order(1).encode())) == "AA"
        assert not any(closed_by_peer(s, 0.05) for s in kept)
    assert Db(capped.db).query("SELECT COUNT(*) FROM message_log")[0][0] == 1
    assert scraped_rejections(capped, "mllp", "per_address_cap") == 5
    log = capped.log_text()
    assert log.count("event=mllp_connection_refused") == 5
    assert f'reason="mllp.max_connections_per_address 20 reached by {OTHER}"' in log
    # the slots come back when the sockets close (the broker sees the closes a moment later)
    for _ in range(50):
        try:
            assert msa_code(exchange(capped.port, order(2).encode(), source=OTHER)) == "AA"
            break
        except (AssertionError, ConnectionError):
            time.sleep(0.1)
    else:
        raise AssertionError(f"{OTHER} is still refused after its sockets closed")


def test_a_trickling_frame_is_closed_at_the_frame_timeout(capped: BrokerProcess) -> None:
    with connect_from(OTHER, capped.port) as slow:
        slow.sendall(b"\x0b")
        sent, closed, served = 0, False, ""
        for byte in TRICKLED + b"\x1c\r":
            if closed_by_peer(slow, 0.2):
                closed = True
                break
            try:
                slow.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sent += 1
            if sent == 2:  # another sender is served while the frame trickles in
                served = msa_code(exchange(capped.port, order(3).encode()))
        assert closed, "the trickling connection was never closed"
        assert sent < len(TRICKLED)
    assert served == "AA"
    db = Db(capped.db)
    assert db.query("SELECT control_id FROM message_log") == [("MSG00000003",)]
    assert scraped_rejections(capped, "mllp", "frame_timeout") == 1
    log = capped.log_text()
    assert "event=mllp_frame_timeout" in log and "seconds=1.0" in log
    # the idle timeout (300 s) did not fire: the deadline is per frame
    assert "event=mllp_idle_timeout" not in log


def test_bytes_outside_frames_do_not_keep_a_connection_open(tmp_path: Path) -> None:
    """A byte of garbage a second (outside any frame) neither resets the idle timeout nor
    writes a log line each: the connection closes at mllp.idle_timeout, a few lines logged."""
    proc = BrokerProcess(tmp_path, ("mllp.idle_timeout=2", "mllp.frame_timeout=1"))
    proc.start()
    try:
        with connect_from(OTHER, proc.port) as noisy:
            started = time.monotonic()
            closed = False
            for _ in range(12):  # 6 s of garbage at most: three idle timeouts
                if closed_by_peer(noisy, 0.5):
                    closed = True
                    break
                try:
                    noisy.sendall(b"X")
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
            held = time.monotonic() - started
            assert closed, "bytes outside frames kept the connection open"
        # another address is served meanwhile and after
        assert msa_code(exchange(proc.port, order(4).encode())) == "AA"
        garbage = scraped_rejections(proc, "mllp", "garbage")
    finally:
        proc.stop()
    log = proc.log_text()
    assert "event=mllp_idle_timeout" in log
    assert held < 5.0, held
    assert garbage >= 2  # every chunk is counted …
    assert log.count("event=mllp_garbage") == 1  # … one line per connection per 10 s
