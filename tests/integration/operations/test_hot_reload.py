"""Mapping hot reload in the real ``serve``: a broken file is refused while messages keep
flowing under the running set; a valid change goes into force without a restart, on a file
change and on SIGHUP."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import time
import urllib.request
from pathlib import Path

from broker.hl7.mllp import MllpClient
from tests.support.broker import ROOT, BrokerProcess
from tests.support.db import Db
from tests.support.mllp import msa
from tests.support.samples import order

STEP_ID = "        ScheduledProcedureStepID: OBR-20\n"
MODALITY = "        Modality: OBR-24\n"


def wait_for_log(proc: BrokerProcess, pattern: str, count: int = 1,
                 seconds: float = 20.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = proc.log_text()
        if len(re.findall(pattern, text)) >= count:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not logged {count} time(s):\n{proc.log_text()[-3000:]}")


def console_mappings(proc: BrokerProcess) -> dict[str, object]:
    url = f"http://127.0.0.1:{proc.admin_port}/api/mappings"
    with urllib.request.urlopen(url, timeout=10) as answer:
        data: dict[str, object] = json.load(answer)
    return data


class Sender:
    """Sends one order after another on one connection until told to stop (bounded)."""

    def __init__(self, port: int, limit: int = 5000) -> None:
        self.port, self.limit = port, limit
        self.codes: list[str] = []
        self.stop = asyncio.Event()

    async def run(self) -> None:
        async with MllpClient("127.0.0.1", self.port, timeout=10.0) as client:
            for n in range(1, self.limit + 1):
                if self.stop.is_set():
                    return
                self.codes.append(msa((await client.send(order(n).encode())).decode())[1])

    async def until_sent(self, count: int, seconds: float = 20.0) -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        while len(self.codes) < count:
            assert asyncio.get_running_loop().time() < deadline, "the sender stalled"
            await asyncio.sleep(0.01)


async def _send_while_breaking(proc: BrokerProcess, orders: Path) -> tuple[list[str], int]:
    """Send throughout the broken file's refusal; the codes and the count sent before it."""
    sender = Sender(proc.port)
    task = asyncio.create_task(sender.run())
    try:
        await sender.until_sent(20)
        orders.write_text(orders.read_text().replace(MODALITY, "        Modality: OBR-XX\n"))
        await asyncio.to_thread(wait_for_log, proc, r"event=mappings_kept")
        refused_after = len(sender.codes)
        await sender.until_sent(refused_after + 20)
    finally:
        sender.stop.set()
        await asyncio.wait_for(task, 20)
    return sender.codes, refused_after


async def _station_of(proc: BrokerProcess, n: int, station: str) -> list[str]:
    async with MllpClient("127.0.0.1", proc.port, timeout=10.0) as client:
        ack = (await client.send(order(n, station=station).encode())).decode()
    assert msa(ack)[1] == "AA", ack
    steps = Db(proc.db).steps(f"1.2.826.0.1.3680043.8.498.{n + 1}")
    return [s for step in steps.values() for s in step["_stations"]]


def test_broken_mapping_is_refused_while_messages_flow_and_changes_apply(
        tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    orders = mappings / "orders.yaml"
    original = orders.read_text()
    assert STEP_ID in original and MODALITY in original
    proc = BrokerProcess(tmp_path, (f"mappings.directory={mappings}",
                                    "mappings.watch_interval=0.2"))
    proc.start()
    try:
        codes, refused_after = asyncio.run(_send_while_breaking(proc, orders))
        assert len(codes) >= refused_after + 20 and set(codes) == {"AA"}
        log = proc.log_text()
        assert re.search(r"event=mapping_rejected trigger=file_change error=\"[^\"]*"
                         r"orders\.yaml:\d+: Modality: 'OBR-XX' is not a field path", log)
        late = Db(proc.db).steps(f"1.2.826.0.1.3680043.8.498.{refused_after + 2}")
        assert [s["_modality"] for s in late.values()] == ["CT"]  # the running set kept
        shown = console_mappings(proc)["last_reload"]
        assert isinstance(shown, dict) and shown["ok"] is False
        assert any("orders.yaml" in e and "OBR-XX" in e for e in shown["errors"])

        orders.write_text(original.replace(
            STEP_ID, STEP_ID + '        ScheduledStationAETitle: "ORC-18[*].1"\n'))
        wait_for_log(proc, r"event=mappings_reloaded trigger=file_change")
        assert asyncio.run(_station_of(proc, 9001, "CT77")) == ["CT77"]
        assert console_mappings(proc)["last_reload"]["ok"] is True  # type: ignore[index]

        orders.write_text(original.replace(
            STEP_ID, STEP_ID + '        ScheduledStationAETitle: "ORC-18[*].2"\n'))
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGHUP)
        wait_for_log(proc, r"event=mappings_reloaded trigger=sighup")
        assert asyncio.run(_station_of(proc, 9002, "X^CT88")) == ["CT88"]
    finally:
        assert proc.stop() == 0
