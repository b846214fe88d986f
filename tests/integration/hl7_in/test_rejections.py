"""Bad input gets a precise NAK, changes nothing, and the broker keeps serving others."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from broker.app import Broker
from broker.hl7.mllp import END, START_BYTE, MllpClient
from tests.support.broker import BIN, ROOT, make_settings
from tests.support.db import Db
from tests.support.mllp import err, msa, send
from tests.support.samples import order

GB_NAME = "\u738b^\u5c0f\u660e"  # 王^小明


async def still_serving(broker: Broker, n: int = 9000) -> None:
    ack = (await send(broker.mllp.bound_port, order(n).encode()))[0]
    assert msa(ack)[1] == "AA"


async def assert_rejected(broker: Broker, payload: bytes, code: str, err_code: str,
                          location: str) -> str:
    db = Db(broker.settings.database.path)
    before = db.domain_snapshot()
    ack = (await send(broker.mllp.bound_port, payload))[0]
    assert msa(ack)[1] == code, ack
    e = err(ack)
    assert e[3].split("^")[0] == err_code, ack
    assert e[2] == location, ack
    assert db.domain_snapshot() == before
    await still_serving(broker)
    return ack


async def test_garbage_before_first_frame(broker: Broker) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.mllp.bound_port)
    writer.write(b"GET / HTTP/1.0\r\n\r\n\x00\x00" + START_BYTE + order(1).encode() + END)
    await writer.drain()
    data = await asyncio.wait_for(reader.readuntil(END), 5)
    assert b"MSA|AA|MSG00000001" in data
    writer.close()
    assert Db(broker.settings.database.path).counts()["steps"] == 1


async def test_nul_and_newlines_between_frames(broker: Broker) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.mllp.bound_port)
    stream = b"".join(b"\x00\r\n" + START_BYTE + order(n).encode() + END for n in (1, 2, 3))
    writer.write(stream)
    await writer.drain()
    answers = [await asyncio.wait_for(reader.readuntil(END), 5) for _ in range(3)]
    assert [a.split(b"|")[1] for a in (x.split(b"MSA")[1] for x in answers)] == [b"AA"] * 3
    writer.close()


async def test_frame_with_no_end_is_dropped_at_idle_timeout(tmp_path: Path) -> None:
    b = Broker(make_settings(tmp_path, idle_timeout=0.5))
    await b.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", b.mllp.bound_port)
        writer.write(START_BYTE + order(1).encode())  # no 0x1C 0x0D
        await writer.drain()
        await still_serving(b)  # another connection is served meanwhile
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing answered
        writer.close()
        db = Db(b.settings.database.path)
        assert [row[0] for row in db.log()] == ["MSG00009000"]
    finally:
        await b.stop()


async def test_fifty_mib_frame_gets_ar_and_the_connection_closes(broker: Broker) -> None:
    limit = broker.settings.mllp.max_frame_bytes
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.mllp.bound_port)
    head = order(1).encode().replace(b"\r", b"\rNTE|1||", 1)
    chunk = b"x" * (1 << 20)
    sent = 0

    async def pump() -> None:
        nonlocal sent
        writer.write(START_BYTE + head)
        try:
            for _ in range(50):
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
        except ConnectionError:
            pass

    pumping = asyncio.create_task(pump())
    answer = await asyncio.wait_for(reader.readuntil(END), 10)
    assert b"MSA|AR|MSG00000001" in answer
    assert f"limit of {limit} bytes".encode() in answer
    assert await asyncio.wait_for(reader.read(), 10) == b""
    await asyncio.wait_for(pumping, 30)
    writer.close()
    assert Db(broker.settings.database.path).counts()["steps"] == 0
    await still_serving(broker)


async def test_empty_message(broker: Broker) -> None:
    ack = await assert_rejected(broker, b"", "AR", "100", "MSH^1")
    assert "empty message" in ack


async def test_message_without_msh(broker: Broker) -> None:
    payload = b"PID|||123^^^HOSP||DOE^JOHN\rORC|NW|X\r"
    ack = await assert_rejected(broker, payload, "AR", "100", "MSH^1")
    assert "does not start with an MSH segment" in ack


async def test_wrong_encoding_characters(broker: Broker) -> None:
    payload = order(1).encode().replace(b"^~\\&", b"^^\\&", 1)
    ack = await assert_rejected(broker, payload, "AR", "102", "MSH^1^2")
    assert "encoding characters" in ack


async def test_non_numeric_birth_date(broker: Broker) -> None:
    payload = order(1, birth_date="1970-01-01").encode()
    ack = await assert_rejected(broker, payload, "AE", "102", "PID^1^7")
    assert "PatientBirthDate" in ack and "1970-01-01" in ack
    assert msa(ack)[2] == "MSG00000001"


async def test_unknown_message_type(broker: Broker) -> None:
    payload = order(1).encode().replace(b"ORM^O01", b"QRY^Q01")
    ack = await assert_rejected(broker, payload, "AR", "200", "MSH^1^9")
    assert "QRY\\S\\Q01" in ack


async def test_unknown_event_of_known_type(broker: Broker) -> None:
    payload = order(1).encode().replace(b"ORM^O01", b"ADT^A99")
    await assert_rejected(broker, payload, "AR", "201", "MSH^1^9^^2")


async def test_unsupported_version_and_processing_id(broker: Broker) -> None:
    await assert_rejected(broker, order(1, version="2.1").encode(), "AR", "203", "MSH^1^12")
    payload = order(2).encode().replace(b"|P|2.3.1", b"|D|2.3.1")
    await assert_rejected(broker, payload, "AR", "202", "MSH^1^11")


async def test_order_for_unknown_patient_without_pid(broker: Broker) -> None:
    ack = await assert_rejected(broker, order(1, with_pid=False).encode(), "AE", "101",
                                "PID^1^3^^1")
    assert "has no PID segment" in ack


async def test_cancel_for_unknown_order(broker: Broker) -> None:
    payload = order(1, order_control="CA", order_status="CA").encode()
    ack = await assert_rejected(broker, payload, "AE", "204", "ORC^1^2^^1")
    assert "unknown order" in ack and "PLC0000001" in ack


async def test_unmapped_order_control_pair(broker: Broker) -> None:
    payload = order(1, order_control="ZZ", order_status="XX").encode()
    ack = await assert_rejected(broker, payload, "AE", "103", "ORC^1^1")
    assert "'ZZ'" in ack and "'XX'" in ack


async def test_gb18030_name_declared_utf8_is_refused(broker: Broker) -> None:
    payload = order(1, patient_name=GB_NAME, charset="UNICODE UTF-8").encode("gb18030")
    ack = await assert_rejected(broker, payload, "AE", "102", "MSH^1^18")
    assert "not valid" in ack and "offset" in ack
    assert "UNICODE UTF-8" in ack.split("\r")[0]  # the ACK uses the inbound character set


async def test_gb18030_name_accepted_with_sender_override(tmp_path: Path) -> None:
    from broker.config import SenderSettings

    settings = make_settings(tmp_path)
    settings.hl7.senders = [SenderSettings(application="RIS", facility="HOSP",
                                           charset="gb18030")]
    b = Broker(settings)
    await b.start()
    try:
        payload = order(1, patient_name=GB_NAME, charset="UNICODE UTF-8").encode("gb18030")
        ack = (await send(b.mllp.bound_port, payload))[0]
        assert msa(ack)[1] == "AA"
        assert Db(b.settings.database.path).patient("P0000001", "HOSP")["PatientName"] == GB_NAME
    finally:
        await b.stop()


async def test_bad_requests_do_not_disturb_a_concurrent_connection(broker: Broker) -> None:
    async with MllpClient("127.0.0.1", broker.mllp.bound_port) as good:
        bad = asyncio.create_task(send(broker.mllp.bound_port, b"", b"junk", b"MSH|"))
        for n in range(20):
            assert b"MSA|AA" in await good.send(order(n).encode())
        assert all(msa(a)[1] == "AR" for a in await bad)


def copy_mappings(tmp_path: Path) -> Path:
    folder = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", folder)
    return folder


def test_mapping_typo_is_reported_with_file_and_line(tmp_path: Path) -> None:
    folder = copy_mappings(tmp_path)
    orders = folder / "orders.yaml"
    lines = orders.read_text().splitlines()
    number = next(i for i, line in enumerate(lines) if "AccessionNumber: OBR-18" in line)
    lines[number] = lines[number].replace("AccessionNumber", "AccesionNumber")
    orders.write_text("\n".join(lines) + "\n")

    out = subprocess.run([str(BIN / "mwl-broker"), "check-mappings", str(folder)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert f"{orders}:{number + 1}: 'AccesionNumber' is not a DICOM keyword" in out.stdout
    assert "did you mean 'AccessionNumber'?" in out.stdout

    serve = subprocess.run([str(BIN / "mwl-broker"), "serve", "-o",
                            f"mappings.directory={folder}", "-o",
                            f"database.path={tmp_path / 'db.sqlite'}", "-o", "mllp.port=0",
                            "-o", "dicom.port=0"],
                           capture_output=True, text=True, timeout=60)
    assert serve.returncode == 2
    assert "not starting" in serve.stderr and "AccesionNumber" in serve.stderr


@pytest.mark.parametrize("folder_ok", [True])
def test_shipped_mappings_pass_check(folder_ok: bool) -> None:
    out = subprocess.run([str(BIN / "mwl-broker"), "check-mappings"], capture_output=True,
                         text=True, timeout=60)
    assert (out.returncode == 0) is folder_ok, out.stdout
    assert "ORM^O01" in out.stdout and "OMI^O23" in out.stdout


async def test_invalid_mapping_reload_keeps_the_running_set(tmp_path: Path) -> None:
    folder = copy_mappings(tmp_path)
    settings = make_settings(tmp_path)
    settings.mappings.directory = str(folder)
    b = Broker(settings)
    await b.start()
    try:
        (folder / "orders.yaml").write_text(
            (folder / "orders.yaml").read_text().replace("transform: date", "transform: dat"))
        assert b.mappings.reload() is False
        assert any("unknown transform 'dat'" in e for e in b.mappings.last_errors)
        await still_serving(b)
    finally:
        await b.stop()
