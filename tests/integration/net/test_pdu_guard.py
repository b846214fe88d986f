"""Regressions found by the live fuzz campaign (benchmarks/fuzz_live.py) at the DICOM port."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from benchmarks import dicom_wire
from broker.app import Broker
from broker.dicom.pynetdicom_patches.pdu_bound import MAX_PDU_BYTES
from tests.support.broker import make_settings, running


async def echo(port: int) -> int:
    assoc = await asyncio.wait_for(dicom_wire.Association.open(
        "127.0.0.1", port, "CHECK", "MWLBROKER", dicom_wire.VERIFICATION), 10)
    response = await asyncio.wait_for(assoc.request(dicom_wire.c_echo(1)), 10)
    await asyncio.wait_for(assoc.release(), 10)
    return response.status


async def first_pdu_type(reader: asyncio.StreamReader) -> int | None:
    """The type of the next PDU, or None when the connection closes."""
    with contextlib.suppress(ConnectionError):
        head = await asyncio.wait_for(reader.read(1), 10)
        return head[0] if head else None
    return None


async def test_bad_associate_requests_do_not_hold_association_slots(broker: Broker) -> None:
    """Each unreadable A-ASSOCIATE-RQ held a slot for the whole ACSE timeout (30 s): 200 of
    them refused every modality (A-ASSOCIATE-RJ) and made shutdown hang."""
    port = broker.dicom.bound_port
    for _ in range(200):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x01\x00\x00\x00\x00\x10" + b"x" * 16)
        assert await first_pdu_type(reader) in (0x07, None)  # A-ABORT, then closed
        writer.close()
    assert await echo(port) == 0


async def test_oversized_pdu_is_aborted_unread(broker: Broker) -> None:
    """pynetdicom read any claimed PDU length into memory (100 MB took ~400 MB of RSS)."""
    port = broker.dicom.bound_port
    assoc = await dicom_wire.Association.open("127.0.0.1", port, "FUZZ", "MWLBROKER",
                                              ModalityWorklistInformationFind)
    assoc.writer.write(struct.pack(">BxI", 0x04, MAX_PDU_BYTES + 1) + b"\0" * 1024)
    assert await first_pdu_type(assoc.reader) == 0x07  # A-ABORT
    assoc.writer.close()
    assert await echo(port) == 0


async def test_command_set_without_command_field_aborts_the_association(broker: Broker) -> None:
    """The DUL reactor thread died on it and left the connection open and unanswered."""
    port = broker.dicom.bound_port
    assoc = await dicom_wire.Association.open("127.0.0.1", port, "FUZZ", "MWLBROKER",
                                              ModalityWorklistInformationFind)
    command = struct.pack("<HHI", 0x0000, 0x0002, 2) + b"1\0"  # only Affected SOP Class UID
    body = struct.pack(">IBB", len(command) + 2, dicom_wire.CONTEXT_ID, 0x03) + command
    assoc.writer.write(struct.pack(">BxI", 0x04, len(body)) + body)
    assert await first_pdu_type(assoc.reader) in (0x07, None)
    assoc.writer.close()
    assert await echo(port) == 0


@pytest.fixture
async def roomy_broker(tmp_path: Path) -> AsyncIterator[Broker]:
    """A broker without a per-address cap: here 64 "modalities" share 127.0.0.1."""
    settings = make_settings(tmp_path)
    settings.dicom.max_associations_per_address = 0
    async with running(settings) as b:
        yield b


async def test_64_associations_opened_at_once_are_all_accepted(roomy_broker: Broker) -> None:
    """Found by benchmarks/load.py: with socketserver's listen backlog of 5, some of 64
    modalities connecting together waited for TCP retransmissions (over 30 s)."""
    port = roomy_broker.dicom.bound_port

    async def one(k: int) -> int:
        assoc = await asyncio.wait_for(dicom_wire.Association.open(
            "127.0.0.1", port, f"LOAD{k:03d}", "MWLBROKER", dicom_wire.VERIFICATION), 5)
        status = (await asyncio.wait_for(assoc.request(dicom_wire.c_echo(1)), 10)).status
        await asyncio.wait_for(assoc.release(), 10)
        return status

    assert await asyncio.gather(*(one(k) for k in range(64))) == [0] * 64
