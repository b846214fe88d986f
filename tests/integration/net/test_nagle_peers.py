"""No request waits for a delayed-ACK timer, whatever way the peer writes it.

A peer that leaves Nagle's algorithm on and writes one request in pieces (DCMTK ``findscu``
and stock pynetdicom: the command PDU, then the data set PDU; an MLLP sender: start block,
message, end block) holds each later piece until the first is acknowledged; without the
broker's quick acknowledgement every request waited for Linux's delayed-ACK timer (~40 ms:
20 ``findscu`` queries took ~1.1 s instead of ~0.2 s). The kernel counts each ACK sent by
that timer (TcpExt DelayedACKs, /proc/net/netstat): these tests count them around a run
of N requests instead of timing it. Before the fix every request cost at least one (about
24 for 20 queries, 40 for 20 MLLP frames in three writes); the bound leaves room for a few
from anything else on the machine.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from broker.dicom import pynetdicom_patches
from broker.hl7.mllp import Frame, Framer
from tests.support.broker import BrokerProcess
from tests.support.samples import order

REQUESTS = 20


def delayed_acks() -> int:
    lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines()
             if line.startswith("TcpExt:")]
    return int(lines[1][lines[0].index("DelayedACKs")])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> BrokerProcess:
    proc = BrokerProcess(tmp_path_factory.mktemp("nagle"), ("logging.level=WARNING",))
    proc.start()
    yield proc  # type: ignore[misc]
    proc.stop()


def test_findscu_with_nagle_on_waits_for_no_timer(served: BrokerProcess,
                                                  tmp_path: Path) -> None:
    query = Dataset()
    query.PatientName = ""
    step = Dataset()
    step.ScheduledStationAETitle = "CT01"
    step.ScheduledProcedureStepStartDate = ""
    step.Modality = ""
    query.ScheduledProcedureStepSequence = [step]
    path = tmp_path / "query.dcm"
    query.save_as(path, implicit_vr=True, little_endian=True)
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}  # findscu as shipped
    before = delayed_acks()
    out = subprocess.run(["findscu", "-W", "-aec", "MWLBROKER", "-aet", "FINDSCU",
                          "127.0.0.1", str(served.dicom_port), *[str(path)] * REQUESTS],
                         capture_output=True, text=True, env=env, timeout=120)
    waited = delayed_acks() - before
    assert out.returncode == 0, out.stderr
    assert waited < REQUESTS // 4, f"{waited} delayed ACKs for {REQUESTS} queries"


STOCK_MPPS_SCU = textwrap.dedent("""
    import sys
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid
    from pynetdicom import AE
    from pynetdicom.sop_class import ModalityPerformedProcedureStep as MPPS
    ae = AE(ae_title="NAGLESCU")
    ae.dimse_timeout = 20
    ae.add_requested_context(MPPS)
    assoc = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="MWLBROKER")
    assert assoc.is_established
    done = 0
    for n in range(int(sys.argv[2])):
        ds = Dataset()
        ds.PerformedProcedureStepStatus = "IN PROGRESS"
        ds.Modality = "CT"
        ds.PerformedStationAETitle = "NAGLESCU"
        ds.PerformedProcedureStepStartDate = "20261202"
        ds.PerformedProcedureStepStartTime = "101500"
        ds.PatientID = f"NAGLE{n}"
        ds.PatientName = "NAGLE^TEST"
        ds.PerformedProcedureStepID = f"PPS{n}"
        ds.ScheduledStepAttributesSequence = [Dataset()]
        ds.ScheduledStepAttributesSequence[0].StudyInstanceUID = generate_uid()
        status, _ = assoc.send_n_create(ds, MPPS, generate_uid())
        done += getattr(status, "Status", None) == 0
    assoc.release()
    print(done)
""")


def test_a_stock_pynetdicom_mpps_scu_waits_for_no_timer(served: BrokerProcess) -> None:
    """Stock pynetdicom (no broker patch in its process: Nagle on, two writes per message)."""
    pairs = REQUESTS
    before = delayed_acks()
    out = subprocess.run([sys.executable, "-c", STOCK_MPPS_SCU, str(served.dicom_port),
                          str(pairs)], capture_output=True, text=True, timeout=180)
    waited = delayed_acks() - before
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) >= pairs - 2  # stock SCUs lose a response now and then
    assert waited < pairs // 4, f"{waited} delayed ACKs for {pairs} N-CREATEs"


def test_an_mllp_sender_writing_a_frame_in_pieces_waits_for_no_timer(
        served: BrokerProcess) -> None:
    before = delayed_acks()
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        for n in range(REQUESTS):
            for piece in (b"\x0b", order(n).encode(), b"\x1c\r"):  # Nagle on: three writes
                sock.sendall(piece)
            framer = Framer()
            while not any(isinstance(f, Frame) for f in framer.feed(sock.recv(65536))):
                pass
    waited = delayed_acks() - before
    assert waited < REQUESTS // 4, f"{waited} delayed ACKs for {REQUESTS} frames"


def test_the_broker_s_own_associations_send_each_pdu_at_once() -> None:
    """An SCU association of the broker (storage commitment, MPPS forwarding, the worklist
    client) has TCP_NODELAY once it has read the association's acceptance."""
    pynetdicom_patches.apply(fast_path=False)
    scp = AE(ae_title="PEER")
    scp.add_supported_context(Verification)
    server = scp.start_server(("127.0.0.1", 0), block=False,
                              evt_handlers=[(evt.EVT_C_ECHO, lambda event: 0x0000)])
    try:
        scu = AE(ae_title="MWLBROKER")
        scu.add_requested_context(Verification)
        assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="PEER")
        assert assoc.is_established
        try:
            assert assoc.send_c_echo().Status == 0
            sock = assoc.dul.socket.socket
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        finally:
            assoc.release()
    finally:
        server.shutdown()
