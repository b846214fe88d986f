"""The DUL reactor reads the peer while it still has answers to send: a C-CANCEL sent after
the fifth of 20,000 queued C-FIND answers stops the search (stock pynetdicom 3.0.4 reads the
socket only once its send queue is empty, so it answered all 20,000 first)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from broker.dicom import pynetdicom_patches
from broker.dicom.pynetdicom_patches.encoded import PreEncoded

ANSWERS = 20_000
CANCEL = 0xFE00


@pytest.fixture(params=[True, False], ids=["fast_path", "stock_speed"])
def patched(request: pytest.FixtureRequest) -> Iterator[bool]:
    pynetdicom_patches.apply(fast_path=bool(request.param))
    yield bool(request.param)
    pynetdicom_patches.apply(fast_path=True)


def test_cancel_is_read_while_answers_are_queued(patched: bool) -> None:
    plain = Dataset()
    plain.PatientID = "P1"
    plain.AccessionNumber = "A1"
    # pre-encoded (as the worklist SCP answers): far cheaper to make than to send
    raw = b"\x08\x00\x50\x00\x02\x00\x00\x00A1\x10\x00\x20\x00\x02\x00\x00\x00P1"
    answer = PreEncoded(raw, True, lambda: plain) if patched else plain
    yielded = [0]

    def on_find(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        for _ in range(ANSWERS):
            if event.is_cancelled:
                yield CANCEL, None
                return
            yielded[0] += 1
            yield 0xFF00, answer
        yield 0x0000, None

    scp = AE(ae_title="MWLTEST")
    scp.add_supported_context(ModalityWorklistInformationFind)
    server = scp.start_server(("127.0.0.1", 0), block=False,
                              evt_handlers=[(evt.EVT_C_FIND, on_find)])
    try:
        port = server.server_address[1]
        scu = AE(ae_title="CANCELSCU")
        scu.add_requested_context(ModalityWorklistInformationFind)
        scu.acse_timeout = scu.dimse_timeout = scu.network_timeout = 30
        assoc = scu.associate("127.0.0.1", port, ae_title="MWLTEST")
        assert assoc.is_established
        query = Dataset()
        query.PatientID = ""
        statuses: list[int] = []
        received = 0
        try:
            for status, _identifier in assoc.send_c_find(query, ModalityWorklistInformationFind,
                                                         msg_id=1):
                code = int(status.Status) if status else -1
                statuses.append(code)
                if code in (0xFF00, 0xFF01):
                    received += 1
                    if received == 5:
                        assoc.send_c_cancel(1, query_model=ModalityWorklistInformationFind)
                else:
                    break
        finally:
            assoc.release()
        assert statuses[-1] == CANCEL, f"final status {statuses[-1]:#06x} after {received}"
        assert yielded[0] < ANSWERS, f"{yielded[0]} answers before the C-CANCEL was read"
    finally:
        server.shutdown()
