"""One misbehaving DICOM peer cannot take the listener from the others (against ``serve``):
a DIMSE message is bounded by ``dicom.max_message_bytes`` however it is fragmented, one source
address holds at most ``dicom.max_associations_per_address`` connections, and a connection
without a whole A-ASSOCIATE-RQ is cut at ``dicom.negotiation_timeout``."""

from __future__ import annotations

import select
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from benchmarks import dicom_wire
from broker.dicom.pynetdicom_patches.message_bound import DEFAULT_MAX_MESSAGE_BYTES
from tests.support.broker import BrokerProcess, scraped_rejections
from tests.support.dicom_wire import (
    MWL,
    OTHER,
    associate,
    closed_by_peer,
    connect_from,
    echo,
    final_status,
    find,
    memory_kib,
    mwl_query,
    read_pdu,
    still_open,
    stream_fragments,
)


@pytest.fixture(params=["fast_path", "stock"])
def default_broker(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[BrokerProcess]:
    """The broker on its default limits, with and without dicom.fast_path."""
    options = () if request.param == "fast_path" else ("dicom.fast_path=false",)
    proc = BrokerProcess(tmp_path, options)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_a_message_streamed_in_fragments_stops_at_the_bound(
        default_broker: BrokerProcess) -> None:
    """Non-final data set fragments were kept without bound (94 MiB → 1.1 GiB of RSS)."""
    port, pid = default_broker.dicom_port, default_broker.proc.pid  # type: ignore[union-attr]
    assert echo(port) == 0  # the first association loads what every later one uses
    before = memory_kib(pid, "VmRSS")
    limit = DEFAULT_MAX_MESSAGE_BYTES
    with associate(port, calling="STREAMER") as sock:
        sent = stream_fragments(sock, 16 * limit)
        answer = read_pdu(sock)
    assert answer is not None and answer[0] == 0x07, f"no A-ABORT after {sent} bytes: {answer}"
    assert answer[1][2] == 0x02  # source: service provider
    assert sent < 16 * limit
    peak = memory_kib(pid, "VmHWM")
    assert (peak - before) * 1024 < 8 * limit, f"RSS {before} KiB grew to a peak of {peak} KiB"
    assert find(port) == 0x0000
    assert scraped_rejections(default_broker, "dicom", "message_too_large") == 1
    log = default_broker.log_text()
    assert "dicom_message_too_large" in log and "calling_ae=STREAMER" in log
    assert f"limit={limit}" in log


def test_a_message_under_the_bound_is_answered(default_broker: BrokerProcess) -> None:
    """Fragments are counted per message: many messages on one association are not summed."""
    port = default_broker.dicom_port
    identifier = dicom_wire.encode_dataset(mwl_query())
    with associate(port) as sock:
        for message_id in range(1, 4):
            sock.sendall(dicom_wire.c_find(message_id, MWL, identifier))
            assert final_status(sock) == 0x0000
    assert scraped_rejections(default_broker, "dicom", "message_too_large") == 0


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path, ("dicom.max_associations_per_address=4",
                                    "dicom.negotiation_timeout=120"))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_one_address_holds_at_most_its_cap(capped: BrokerProcess) -> None:
    port = capped.dicom_port
    with ExitStack() as held:
        bare = [held.enter_context(connect_from(OTHER, port)) for _ in range(4)]
        with connect_from(OTHER, port) as extra:
            extra.sendall(dicom_wire.associate_rq("FLOODER", "MWLBROKER", MWL))
            answer = read_pdu(extra)
            assert answer is not None and answer[0] == 0x03, answer  # A-ASSOCIATE-RJ
            assert answer[1][1:4] == b"\x02\x03\x02"  # transient, provider, local limit
            assert read_pdu(extra) is None
        assert echo(port) == 0  # another address is served meanwhile
        assert find(port) == 0x0000
        assert all(still_open(s) for s in bare)
        bare.pop().close()
        for _ in range(100):  # the closed one's slot comes back when its association ends
            try:
                assert echo(port, OTHER) == 0
                break
            except AssertionError:
                time.sleep(0.1)
        else:
            raise AssertionError("the slot of a closed connection was not given back")
    assert scraped_rejections(capped, "dicom", "per_address_cap") >= 1
    assert "dicom.max_associations_per_address 4" in capped.log_text()


@pytest.fixture
def quick_deadline(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path, ("dicom.negotiation_timeout=1",))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_a_bare_connection_is_closed_at_the_negotiation_deadline(
        quick_deadline: BrokerProcess) -> None:
    with connect_from(OTHER, quick_deadline.dicom_port) as sock:
        assert closed_by_peer(sock, 30.0)
    assert scraped_rejections(quick_deadline, "dicom", "negotiation_timeout") >= 1
    assert echo(quick_deadline.dicom_port) == 0


def test_a_trickled_associate_request_is_cut_at_the_deadline(
        quick_deadline: BrokerProcess) -> None:
    """Each byte restarted no timer, but the request read blocked the association (and its
    slot) until the whole PDU came, for as long as the peer kept trickling."""
    request = dicom_wire.associate_rq("TRICKLER", "MWLBROKER", MWL)
    port = quick_deadline.dicom_port
    with connect_from(OTHER, port) as sock:
        closed = False
        for byte in request[:-1]:  # the last byte never goes: the request stays incomplete
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            if select.select([sock], [], [], 0.2)[0]:
                closed = closed_by_peer(sock, 1.0)
                break
        assert closed, "the broker read the whole trickled request without cutting it"
    assert echo(port) == 0
    assert scraped_rejections(quick_deadline, "dicom", "negotiation_timeout") >= 1
