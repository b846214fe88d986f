"""Pending C-FIND responses go to the DUL thread in groups (pynetdicom_patches.encoded): the
first of a query at once, the next ones COALESCE_RESPONSES at a time, then the final one; each
answer arrives whole and in order, also when two queries reuse one Message ID."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pynetdicom.dul as dul_mod
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from broker.dicom import pynetdicom_patches
from broker.dicom.pynetdicom_patches import encoded

MWL = ModalityWorklistInformationFind


@pytest.fixture()
def sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The PDU hand-offs of the SCP's DUL (one entry per send_pdu, its byte count)."""
    pynetdicom_patches.apply(fast_path=True)
    seen: list[int] = []
    stock = dul_mod.DULServiceProvider.send_pdu

    def counted(self: Any, primitive: Any) -> None:
        if self.assoc.is_acceptor and isinstance(primitive, encoded.RawPData):
            seen.append(len(primitive.raw))
        stock(self, primitive)

    monkeypatch.setattr(dul_mod.DULServiceProvider, "send_pdu", counted)
    return seen


def _serve(on_find: Any) -> Any:
    scp = AE(ae_title="MWLTEST")
    scp.add_supported_context(MWL)
    return scp.start_server(("127.0.0.1", 0), block=False,
                            evt_handlers=[(evt.EVT_C_FIND, on_find)])


def _associate(port: int) -> Any:
    scu = AE(ae_title="GROUPSCU")
    scu.add_requested_context(MWL)
    scu.acse_timeout = scu.dimse_timeout = scu.network_timeout = 20
    assoc = scu.associate("127.0.0.1", port, ae_title="MWLTEST")
    assert assoc.is_established
    return assoc


@contextlib.contextmanager
def _association(on_find: Any) -> Iterator[Any]:
    """An SCP answering with ``on_find`` and an association to it, both ended after."""
    server = _serve(on_find)
    try:
        assoc = _associate(server.server_address[1])
        try:
            yield assoc
        finally:
            assoc.release()
    finally:
        server.shutdown()


def _query() -> Dataset:
    query = Dataset()
    query.AccessionNumber = ""
    return query


def _answers(count: int) -> Iterator[tuple[int, Dataset | None]]:
    for n in range(count):
        ds = Dataset()
        ds.AccessionNumber = f"A{n:05d}"
        yield 0xFF00, ds
    yield 0x0000, None


@pytest.mark.parametrize("count", [0, 1, 2, 17, 40])
def test_every_answer_arrives_in_order_with_few_handoffs(sends: list[int], count: int) -> None:
    with _association(lambda event: _answers(count)) as assoc:
        for _ in range(2):  # the same Message ID twice: each query's first goes at once
            sends.clear()
            got = [(int(status.Status), ds.AccessionNumber if ds else None)
                   for status, ds in assoc.send_c_find(_query(), MWL, msg_id=7)]
            assert got == [(0xFF00, f"A{n:05d}") for n in range(count)] + [(0, None)]
            groups = -(-max(0, count - 1) // encoded.COALESCE_RESPONSES)
            assert len(sends) == min(count, 1) + groups + 1, sends


def test_first_pending_answer_is_not_held_back(sends: list[int]) -> None:
    """The handler waits for the client to have the first answer before it makes the
    second: held back, the first would never come and the client would time out."""
    first_seen = threading.Event()

    def on_find(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        answers = _answers(3)
        yield next(answers)
        first_seen.wait(10)
        yield from answers

    with _association(on_find) as assoc:
        statuses = []
        for status, _ds in assoc.send_c_find(_query(), MWL, msg_id=1):
            statuses.append(int(status.Status) if status else -1)
            if len(statuses) == 1:
                assert not first_seen.is_set()
                first_seen.set()
        assert statuses == [0xFF00, 0xFF00, 0xFF00, 0x0000]


def test_a_long_answer_is_not_all_queued_ahead_of_the_socket(sends: list[int]) -> None:
    """3,000 answers of 2 KB (more than the kernel's socket buffers hold) to a client that
    reads slowly: the handler never runs more than a few groups ahead of the DUL thread."""
    deepest = [0]

    def on_find(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        queued = event.assoc.dul.to_provider_queue
        for n in range(3000):
            deepest[0] = max(deepest[0], queued.qsize())
            ds = Dataset()
            ds.AccessionNumber = f"A{n:05d}"
            ds.ImageComments = "x" * 2048
            yield 0xFF00, ds
        yield 0x0000, None

    with _association(on_find) as assoc:
        count = sum(1 for status, _ds in assoc.send_c_find(_query(), MWL, msg_id=1)
                    if status and status.Status == 0xFF00)
        assert count == 3000
    assert deepest[0] <= 6, f"{deepest[0]} groups queued ahead of the socket"
