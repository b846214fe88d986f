"""No patient data in the broker's log by default: rejected and broken input is logged with
its control ID, sender and the error's location, never with its bytes or values (the message
log in the database keeps the raw bytes)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from broker.dicom.client import WorklistClient, build_query
from broker.hl7.mllp import Frame, Framer, frame
from tests.support.broker import BrokerProcess
from tests.support.db import Db
from tests.support.mllp import msa
from tests.support.samples import order

NAME, PID = "ZZSECRETNAME^QQHIDDEN", "SECRETPID4711"
MARKERS = ("ZZSECRETNAME", "QQHIDDEN", "SECRETPID4711", "19991399")


def framed_exchange(port: int, data: bytes) -> list[str]:
    """Write ``data`` as is on one connection; every answer frame until the broker closes."""
    answers: list[str] = []
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        framer = Framer()
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(1 << 16)
            except ConnectionResetError:
                break
            if not chunk:
                break
            answers += [i.payload.decode("latin-1") for i in framer.feed(chunk)
                        if isinstance(i, Frame)]
    return answers


def test_bad_messages_leave_no_patient_data_in_the_log(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path, ("mllp.max_frame_bytes=4096",))
    broker.start()
    try:
        bad_date = order(1, control_id="CTL-AE", patient_name=NAME, patient_id=PID,
                         birth_date="19991399").encode()
        bad_version = order(2, control_id="CTL-AR", patient_name=NAME, patient_id=PID,
                            version="9.9").encode()
        not_hl7 = f"PID|||{PID}^^^HOSP||{NAME}\rOBR|1\r".encode()
        garbage = f"MSH|^~\\&|RIS|HOSP|||x||ORM^O01|CTL-GARBAGE|P|2.3.1\rPID|||{PID}||{NAME}\r"
        oversize = order(4, control_id="CTL-BIG", patient_name=NAME, patient_id=PID).encode()
        oversize = oversize + f"NTE|1||{NAME} {PID} ".encode() * 200
        acks = framed_exchange(broker.port, frame(bad_date) + frame(bad_version)
                               + frame(not_hl7) + garbage.encode()
                               + frame(order(3, control_id="CTL-OK").encode()))
        assert [msa(a)[1] for a in acks] == ["AE", "AR", "AR", "AA"]
        assert "19991399" in acks[0]  # the sender is told which value is wrong
        big = framed_exchange(broker.port, frame(oversize))
        assert [msa(a)[1] for a in big] == ["AR"]
        with WorklistClient("127.0.0.1", broker.dicom_port) as client:
            refused = client.find(build_query({"ScheduledProcedureStepStartDate": "QQHIDDEN",
                                               "PatientName": ""}))
        assert refused.status == 0xC000 and "QQHIDDEN" in refused.comment
    finally:
        broker.stop()
    log = broker.log_text()
    for marker in MARKERS:
        assert marker not in log, f"{marker} in the log:\n{log}"
    ae = next(line for line in log.splitlines() if "control_id=CTL-AE" in line)
    assert "sender=RIS" in ae and "outcome=AE" in ae and "error_at=PID-7" in ae
    ar = next(line for line in log.splitlines() if "control_id=CTL-AR" in line)
    assert "outcome=AR" in ar and "error_at=MSH-12" in ar and "error_code=203" in ar
    unparsable = [line for line in log.splitlines() if "event=hl7_received" in line
                  and "outcome=AR" in line and "error_at=MSH" in line]
    assert len(unparsable) == 2  # the version and the message without an MSH
    assert "event=mllp_garbage" in log and "looks_like=hl7_without_mllp_start_block" in log
    assert "event=mllp_frame_too_large" in log
    # the message log in the database keeps what arrived, for the console and for support
    stored = Db(broker.db).query("SELECT control_id, raw FROM message_log ORDER BY id")
    assert [c for c, _ in stored][:2] == ["CTL-AE", "CTL-AR"]
    assert PID.encode() in stored[0][1]
