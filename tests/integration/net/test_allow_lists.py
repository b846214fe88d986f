"""Allow-lists: HL7 senders (MSH-3/MSH-4 and address), source addresses of the MLLP and DICOM
listeners, and calling AE titles; every refusal answered or closed, logged and counted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from broker.app import Broker
from broker.config import AllowedSenderSettings
from broker.hl7.mllp import frame
from tests.support.broker import make_settings, rejections, running
from tests.support.db import Db
from tests.support.mllp import err, msa, send
from tests.support.samples import order
from tests.support.waiting import until


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Broker]:
    settings = make_settings(tmp_path, idle_timeout=5.0, shutdown_grace=2.0)
    settings.hl7.allowed_senders = [
        AllowedSenderSettings("RIS", "HOSP", ["127.0.0.0/8"]),
        AllowedSenderSettings("LAB", "", ["10.20.0.0/16"])]
    settings.dicom.allowed_calling_aes = ["CT01"]
    async with running(settings) as b:
        yield b


def echo(port: int, calling: str) -> tuple[bool, int]:
    """(established, C-ECHO status) — blocking."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title="MWLBROKER")
    if not assoc.is_established:
        return False, -1
    try:
        return True, int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


async def test_senders_not_on_the_list_get_an_ar_saying_why(
        guarded: Broker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="broker.hl7")
    port = guarded.mllp.bound_port
    allowed, stranger, wrong_place = await send(
        port, order(1).encode(), order(2, sending_application="INTRUDER").encode(),
        order(3, sending_application="LAB", sending_facility="CHEM").encode())
    assert msa(allowed)[1] == "AA"
    assert msa(stranger)[1:3] == ["AR", "MSG00000002"]
    assert err(stranger)[2] == "MSH^1^3" and err(stranger)[3].startswith("207^")
    assert "INTRUDER/HOSP (MSH-3/MSH-4) is not on the list of allowed senders" in err(stranger)[8]
    assert msa(wrong_place)[1] == "AR"
    assert "LAB/CHEM (MSH-3/MSH-4) may not send from address 127.0.0.1" in err(wrong_place)[8]

    db = Db(guarded.settings.database.path)
    log = db.log()
    assert [(c, o) for c, o, *_ in log] == [("MSG00000001", "AA"), ("MSG00000002", "AR"),
                                           ("MSG00000003", "AR")]
    assert "not on the list of allowed senders" in log[1][4]
    assert db.query("SELECT accession FROM procedures") == [("A0000001",)]
    assert rejections(guarded, "mllp", "sender_not_allowed") == 2
    refused = [r.__dict__["fields"] for r in caplog.records if r.msg == "hl7_sender_refused"]
    assert [(f["sender"], f["facility"]) for f in refused] == [("INTRUDER", "HOSP"),
                                                              ("LAB", "CHEM")]
    assert all(f["peer"].startswith("127.0.0.1:") for f in refused)


async def test_calling_ae_not_allowed_is_rejected_logged_and_counted(
        guarded: Broker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="broker.dicom")
    port = guarded.dicom.bound_port
    assert await asyncio.to_thread(echo, port, "CT01") == (True, 0)
    assert await asyncio.to_thread(echo, port, "INTRUDER") == (False, -1)
    await until(lambda: rejections(guarded, "dicom", "calling_ae_not_allowed") == 1)
    rejected = [r.__dict__["fields"] for r in caplog.records if r.msg == "association_rejected"]
    assert rejected[0]["calling_ae"] == "INTRUDER"
    assert rejected[0]["peer"].startswith("127.0.0.1:")
    metrics = guarded.metrics.render().decode()
    assert ('mwl_rejections_total{listener="dicom",reason="calling_ae_not_allowed"} 1.0'
            in metrics)


async def test_addresses_not_on_the_list_are_closed_at_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, idle_timeout=5.0, shutdown_grace=2.0)
    settings.mllp.allowed_addresses = ["10.0.0.0/8", "::1"]
    settings.dicom.allowed_addresses = ["192.168.7.7"]
    b = Broker(settings)
    await b.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", b.mllp.bound_port)
        writer.write(frame(order(1).encode()))
        await writer.drain()
        try:
            answer = await asyncio.wait_for(reader.read(), 5.0)
        except ConnectionError:
            answer = b""
        writer.close()
        assert answer == b""
        assert await asyncio.to_thread(echo, b.dicom.bound_port, "CT01") == (False, -1)
        await until(lambda: rejections(b, "mllp", "address_not_allowed") == 1
                    and rejections(b, "dicom", "address_not_allowed") == 1)
        assert Db(b.settings.database.path).log() == []
    finally:
        await b.stop()
