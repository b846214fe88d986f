"""``mwl-broker listen`` (also ``receive``): prints (and saves) each HL7 message it gets over
MLLP and acknowledges it."""

from __future__ import annotations

import asyncio
import io
import socket
import subprocess
import sys
from pathlib import Path

from broker.cli.receiver import Receiver
from broker.hl7.ack import ack_code_of
from broker.hl7.mllp import MllpClient

MESSAGE = ("MSH|^~\\&|MWLBROKER|RADIOLOGY|RIS|HOSP|20270301090000||ORM^O01|C-42|P|2.3.1|||||"
           "|UNICODE UTF-8\rPID|||PAT-1||Müller^Anna\rORC|SC|PLC-1||||IP\r")


async def exchange(receiver: Receiver, *payloads: bytes) -> list[str]:
    await receiver.start()
    waiting = asyncio.create_task(receiver.wait())
    answers = []
    async with MllpClient("127.0.0.1", receiver.port, timeout=10) as client:
        for payload in payloads:
            answers.append((await client.send(payload)).decode("utf-8"))
    await asyncio.wait_for(waiting, 10)
    return answers


async def test_prints_the_message_and_acknowledges_it_with_its_control_id() -> None:
    out = io.StringIO()
    receiver = Receiver(port=0, count=1, out=out)
    [ack] = await exchange(receiver, MESSAGE.encode("utf-8"))
    assert ack_code_of(ack) == ("AA", "C-42")
    assert "|UNICODE UTF-8" in ack.split("\r")[0]
    printed = out.getvalue()
    assert "ORM^O01 control ID C-42" in printed
    assert "PID|||PAT-1||Müller^Anna\nORC|SC|PLC-1||||IP" in printed


async def test_answers_the_chosen_code_and_stops_after_count() -> None:
    receiver = Receiver(port=0, count=2, answer="AE", out=io.StringIO())
    acks = await exchange(receiver, MESSAGE.encode(), MESSAGE.replace("C-42", "C-43").encode())
    assert [ack_code_of(a) for a in acks] == [("AE", "C-42"), ("AE", "C-43")]
    assert receiver.received == 2
    refused = asyncio.open_connection("127.0.0.1", receiver.port)
    try:
        _, writer = await asyncio.wait_for(refused, 5)
    except OSError:
        return
    writer.close()
    raise AssertionError("the receiver still listens after its count")


async def test_a_message_without_msh_is_answered_ar() -> None:
    out = io.StringIO()
    receiver = Receiver(port=0, count=1, out=out)
    [ack] = await exchange(receiver, b"PID|||1\r")
    assert ack_code_of(ack)[0] == "AR"
    assert "unreadable" in out.getvalue()


async def test_saves_each_message_as_received(tmp_path: Path) -> None:
    out = io.StringIO()
    receiver = Receiver(port=0, count=3, out=out, save=tmp_path)
    latin = MESSAGE.replace("|UNICODE UTF-8", "|8859/1").replace("C-42", "C/../44")
    await exchange(receiver, MESSAGE.encode("utf-8"), latin.encode("latin-1"), b"PID|||1\r")
    saved = sorted(tmp_path.iterdir())
    assert [p.name for p in saved] == ["000001-C-42.hl7", "000002-C_.._44.hl7",
                                       "000003-unreadable.hl7"]
    assert saved[0].read_bytes() == MESSAGE.encode("utf-8")
    assert saved[1].read_bytes() == latin.encode("latin-1")  # the bytes, not re-encoded
    assert saved[2].read_bytes() == b"PID|||1\r"
    assert f"saved as {saved[0]}" in out.getvalue()


def test_mwl_broker_listen_prints_saves_and_acknowledges(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "broker", "listen", "-p", str(port),
                             "-n", "1", "--answer", "AE", "--save", str(tmp_path / "in")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert "listening for HL7" in proc.stderr.readline()

        async def send() -> bytes:
            async with MllpClient("127.0.0.1", port, timeout=10) as client:
                return await client.send(MESSAGE.encode("utf-8"))

        ack = asyncio.run(send()).decode("utf-8")
        stdout, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert ack_code_of(ack) == ("AE", "C-42")
    assert "ORM^O01 control ID C-42" in stdout
    assert (tmp_path / "in" / "000001-C-42.hl7").read_bytes() == MESSAGE.encode("utf-8")
