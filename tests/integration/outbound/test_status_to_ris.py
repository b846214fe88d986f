"""Procedure status to the RIS: MPPS in, HL7 out through the durable outbox, checked field by
field at a real MLLP listener; refusals, wrong acknowledgements, silence and cuts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.app import Broker
from broker.config import DestinationSettings
from tests.support.broker import make_settings
from tests.support.db import Db
from tests.support.mllp import msa, send
from tests.support.mpps import UID, perform
from tests.support.ris import Ris, segment
from tests.support.samples import order
from tests.support.waiting import until


@pytest.fixture
async def ris() -> AsyncIterator[Ris]:
    r = await Ris().start()
    yield r
    await r.stop()


@pytest.fixture
async def linked(tmp_path: Path, ris: Ris) -> AsyncIterator[Broker]:
    settings = make_settings(tmp_path)
    settings.outbound.destinations = [DestinationSettings("ris", "127.0.0.1", ris.port, 1.0)]
    settings.outbound.backoff_base = 0.05
    settings.outbound.backoff_max = 0.2
    settings.outbound.poll = 0.05
    b = Broker(settings)
    await b.start()
    acks = await send(b.mllp.bound_port, order(1).encode())
    assert msa(acks[0])[1] == "AA"
    try:
        yield b
    finally:
        await b.stop()


def outbox(broker: Broker) -> list[tuple[str, int, str]]:
    return Db(broker.settings.database.path).query(
        "SELECT state, attempts, last_error FROM outbox ORDER BY id")


async def test_status_messages_reach_the_ris_field_by_field(linked: Broker, ris: Ris) -> None:
    await asyncio.to_thread(perform, linked)
    await until(lambda: len(ris.received) == 2)
    started, completed = ris.received
    for message, status in ((started, "IP"), (completed, "CM")):
        msh = segment(message, "MSH")
        assert msh[9] == "ORM^O01" and msh[12] == "2.3.1"
        assert segment(message, "PID")[3] == "P0000001^^^HOSP"
        assert segment(message, "PID")[5] == "PATIENT^NUMBER1"
        orc = segment(message, "ORC")
        assert (orc[1], orc[2], orc[3], orc[5]) == ("SC", "PLC0000001", "FIL0000001", status)
        obr = segment(message, "OBR")
        # OBR-24 is a table 0074 diagnostic service section (RAD), not the DICOM modality
        assert (obr[18], obr[19], obr[20], obr[24]) == ("A0000001", "RP0000001", "SPS0000001",
                                                        "RAD")
        assert obr[7] == "20261122101500"
        assert segment(message, "ZDS")[1] == f"{UID}^100^Application^DICOM"
        assert segment(message, "OBX", 0)[5] == "CT01"
    assert segment(completed, "OBR")[8] == "20261122103000"
    assert segment(completed, "OBX", 1)[5] == "1"  # series
    assert segment(completed, "OBX", 2)[5] == "1"  # instances
    await until(lambda: [r[0] for r in outbox(linked)] == ["delivered", "delivered"])


async def test_refusal_is_a_dead_letter_with_the_reason(linked: Broker, ris: Ris) -> None:
    ris.mode = "AE"
    await asyncio.to_thread(perform, linked, None)
    await until(lambda: [r[0] for r in outbox(linked)] == ["dead"])
    assert "answered AE" in outbox(linked)[0][2] and "order unknown here" in outbox(linked)[0][2]


async def test_wrong_msa2_is_not_taken_and_the_message_is_retried(linked: Broker,
                                                                  ris: Ris) -> None:
    ris.mode = "wrong_msa2"
    await asyncio.to_thread(perform, linked, None)
    await until(lambda: len(ris.received) >= 2)  # sent again: the stray ACK did not count
    assert outbox(linked)[0][0] == "pending"
    ris.mode = "AA"
    await until(lambda: outbox(linked)[0][0] == "delivered")
    assert outbox(linked)[0][1] >= 2


@pytest.mark.parametrize("mode", ["silent", "cut"])
async def test_silence_or_a_cut_frame_is_retried_until_the_ris_answers(
        linked: Broker, ris: Ris, mode: str) -> None:
    ris.mode = mode
    await asyncio.to_thread(perform, linked, None)
    await until(lambda: outbox(linked) and outbox(linked)[0][1] >= 1)
    assert outbox(linked)[0][0] == "pending" and outbox(linked)[0][2]
    ris.mode = "AA"
    await until(lambda: outbox(linked)[0][0] == "delivered", 15)


async def test_messages_of_one_order_wait_for_the_earlier_one(linked: Broker,
                                                              ris: Ris) -> None:
    ris.mode = "silent"
    await asyncio.to_thread(perform, linked)  # IP then CM for the same order
    await until(lambda: len(ris.received) >= 2)
    assert all("|IP" in segment(m, "ORC")[5] or segment(m, "ORC")[5] == "IP"
               for m in ris.received)  # only the IP message is tried while it waits
    ris.mode = "AA"
    await until(lambda: [r[0] for r in outbox(linked)] == ["delivered", "delivered"], 15)
    statuses = [segment(m, "ORC")[5] for m in ris.received]
    assert statuses[-1] == "CM" and statuses.index("CM") > max(
        i for i, s in enumerate(statuses) if s == "IP")


async def test_cancel_of_a_started_step_is_refused(linked: Broker, ris: Ris) -> None:
    from tests.support.mllp import err

    await asyncio.to_thread(perform, linked, None)  # IN PROGRESS: the step is STARTED
    cancel = order(1, control_id="CA-1", order_control="CA", order_status="CA")
    ack = (await send(linked.mllp.bound_port, cancel.encode()))[0]
    assert msa(ack)[1] == "AE" and err(ack)[3].startswith("205^")
    assert "is STARTED" in ack and "hl7.cancel_started_steps" in ack
    steps = Db(linked.settings.database.path).steps(UID)
    assert [s["_status"] for s in steps.values()] == ["STARTED"]


async def test_outbox_command_lists_and_retries_dead_letters(linked: Broker, ris: Ris) -> None:
    import subprocess

    from tests.support.broker import BIN

    ris.mode = "AE"
    await asyncio.to_thread(perform, linked, None)
    await until(lambda: [r[0] for r in outbox(linked)] == ["dead"])
    db_option = f"database.path={linked.settings.database.path}"
    listed = subprocess.run([str(BIN / "mwl-broker"), "outbox", "list", "--state", "dead",
                             "-o", db_option], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "dead" in listed.stdout
    assert "answered AE" in listed.stdout
    ris.mode = "AA"
    retried = subprocess.run([str(BIN / "mwl-broker"), "outbox", "retry", "-o", db_option],
                             capture_output=True, text=True, timeout=60)
    assert retried.returncode == 0 and "1 message(s) queued again" in retried.stdout
    await until(lambda: [r[0] for r in outbox(linked)] == ["delivered"])
