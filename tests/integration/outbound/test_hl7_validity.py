"""End to end: a broker sends status messages and a completion notice over MLLP to a RIS, and
the bytes the RIS receives are strictly valid HL7 (hl7apy) in the character set their MSH-18
declares; a destination's charset setting changes both, and a name it cannot hold is a dead
letter with the reason, not mangled bytes."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.app import Broker
from broker.config import DestinationSettings
from tests.support.broker import make_settings
from tests.support.db import Db
from tests.support.hl7_strict import problems
from tests.support.mllp import msa, send
from tests.support.mpps import perform
from tests.support.ris import Ris, oru, segment
from tests.support.samples import order
from tests.support.waiting import until

MAPPINGS = Path(__file__).resolve().parents[3] / "mappings"
#: MSH-18 (table 0211) → how a receiver reads the bytes
CODECS = {"UNICODE UTF-8": "utf-8", "UNICODE": "utf-8", "8859/1": "latin-1"}
NAME = "MÜLLER^JOSÉ"


@pytest.fixture
async def ris() -> AsyncIterator[Ris]:
    r = await Ris().start()
    yield r
    await r.stop()


async def started(folder: Path, ris: Ris, charset: str = "") -> Broker:
    """A broker whose mappings send completion notices at COMPLETED (no archive needed),
    holding one order for a patient whose name is not ASCII."""
    broker = await running(folder, ris, charset)
    raw = order(1, patient_name=NAME, charset="UNICODE UTF-8").text().encode("utf-8")
    acks = await send(broker.mllp.bound_port, raw)
    assert msa(acks[0])[1] == "AA"
    return broker


async def running(folder: Path, ris: Ris, charset: str) -> Broker:
    mappings = folder / "mappings"
    if not mappings.exists():
        shutil.copytree(MAPPINGS, mappings)
        path = mappings / "outbound.yaml"
        text = path.read_text(encoding="utf-8")
        assert text.count("require: [committed, available]") == 1
        path.write_text(text.replace("require: [committed, available]", "require: []"),
                        encoding="utf-8")
    settings = make_settings(folder)
    settings.mappings.directory = str(mappings)
    settings.outbound.destinations = [DestinationSettings("ris", "127.0.0.1", ris.port, 2.0,
                                                          charset=charset)]
    settings.outbound.backoff_base = 0.05
    settings.outbound.backoff_max = 0.2
    settings.outbound.poll = 0.05
    broker = Broker(settings)
    await broker.start()
    return broker


def read(raw: bytes) -> str:
    """The received bytes in the character set their MSH-18 names; it must be one."""
    header = raw.split(b"\r", 1)[0].decode("ascii").split("|")
    charset = header[17] if len(header) > 17 else ""
    assert charset in CODECS, f"MSH-18 {charset!r}"
    return raw.decode(CODECS[charset])


@pytest.mark.parametrize("charset", ["", "8859/1"])
async def test_what_the_ris_receives_is_strictly_valid(tmp_path: Path, ris: Ris,
                                                       charset: str) -> None:
    broker = await started(tmp_path, ris, charset)
    try:
        await asyncio.to_thread(perform, broker)  # IN PROGRESS, then COMPLETED
        await until(lambda: len(ris.raw) == 3)  # IP, CM and the completion notice
    finally:
        await broker.stop()
    texts = [read(raw) for raw in ris.raw]
    for text in texts:
        assert problems(text) == [], text
        assert NAME in text
        if charset:
            assert segment(text, "MSH")[18] == charset
    statuses = [segment(t, "ORC")[5] for t in texts if t not in oru(ris)]
    assert statuses == ["IP", "CM"]
    assert all((segment(t, "OBR") + [""] * 26)[25] == "" for t in texts if t not in oru(ris))
    [notice] = oru(ris)
    assert (segment(notice, "ORC")[5], segment(notice, "OBR")[25]) == ("CM", "F")


async def test_a_name_the_destination_charset_cannot_hold_is_a_dead_letter(
        tmp_path: Path, ris: Ris) -> None:
    """Then, with the destination's charset changed, a retry sends it in the new one."""
    rows: list[tuple[str, str]] = []

    def outbox_is(state: str) -> bool:
        rows[:] = Db(tmp_path / "broker.sqlite").query("SELECT state, last_error FROM outbox")
        return bool(rows) and rows[0][0] == state

    broker = await started(tmp_path, ris, "ASCII")
    try:
        await asyncio.to_thread(perform, broker, None)  # IN PROGRESS only
        await until(lambda: outbox_is("dead"))
    finally:
        await broker.stop()
    assert ris.raw == []
    assert "U+00DC" in rows[0][1] and "'ASCII'" in rows[0][1] and "charset" in rows[0][1]
    broker = await running(tmp_path, ris, "8859/1")
    try:
        await broker.writer.run(lambda uow: uow.outbox.requeue(None))
        broker.outbox.wake()
        await until(lambda: outbox_is("delivered"))
    finally:
        await broker.stop()
    [raw] = ris.raw
    assert segment(read(raw), "MSH")[18] == "8859/1" and NAME.encode("latin-1") in raw
    assert problems(read(raw)) == []
