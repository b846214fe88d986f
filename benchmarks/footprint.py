"""The broker's footprint and readiness with 100,000 scheduled steps, and the end-to-end time
from an ORM sent over MLLP to its step answered by a C-FIND.

- ready: from starting `mwl-broker serve` on a database of 100k steps to the first C-ECHO
  and the first MLLP acknowledgement both answered;
- peak RSS (VmHWM) of the broker after a mixed load (ORMs, station and name queries, MPPS);
- ORM → visible: time from writing an ORM to a C-FIND (kept association) that returns its
  step; the broker acknowledges only after the commit, so one query right after the AA
  finds it.

    python benchmarks/footprint.py           # 100,000 steps
    python benchmarks/footprint.py --quick   # 10,000 steps (CI)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import BrokerUnderTest, machine, percentile, write_results
from benchmarks.mwl_query import identifier, populate
from benchmarks.worklist_data import items
from broker.dicom import pynetdicom_patches
from broker.dicom.client import WorklistClient, build_query, query_keys
from broker.hl7.mllp import MllpClient
from tests.support.samples import order

TARGETS = {"rss_mb_100k": 200.0, "ready_s": 2.0}
STATION = "FOOTPRINT"


def rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_ready(broker: BrokerUnderTest, started: float, timeout: float = 60) -> float:
    """Seconds from launch until a C-ECHO and an MLLP message are both answered."""
    deadline = started + timeout
    echoed = acked = False
    while time.perf_counter() < deadline:
        if not echoed:
            with contextlib.suppress(Exception), WorklistClient(  # not listening yet
                    "127.0.0.1", broker.dicom_port, timeout=2) as client:
                echoed = client.echo() == 0
        if echoed and not acked:
            with contextlib.suppress(OSError):
                acked = asyncio.run(_one_ack(broker.port))
        if echoed and acked:
            return time.perf_counter() - started
        time.sleep(0.005)
    raise TimeoutError("the broker did not become ready")


async def _one_ack(port: int) -> bool:
    async with MllpClient("127.0.0.1", port, timeout=5) as client:
        ack = await client.send(order(9_000_000).encode())
    return b"MSA|AA" in ack


async def orm_to_visible(port: int, dicom_port: int, count: int) -> list[float]:
    times = []
    query_keys_ = query_keys(["AccessionNumber="], station=STATION)
    with WorklistClient("127.0.0.1", dicom_port) as finder:
        async with MllpClient("127.0.0.1", port) as sender:
            for n in range(count):
                sample = order(8_000_000 + n, station=STATION)
                keys = dict(query_keys_, AccessionNumber=sample.accession)
                started = time.perf_counter()
                ack = await sender.send(sample.encode())
                if b"MSA|AA" not in ack:
                    raise RuntimeError(f"ORM {n} not accepted: {ack[:200]!r}")
                result = finder.find(build_query(keys))
                if len(result.matches) != 1:
                    raise RuntimeError(f"ORM {n}: {len(result.matches)} matches")
                times.append((time.perf_counter() - started) * 1000)
    return times


def mixed_load(broker: BrokerUnderTest, seconds: float) -> dict[str, int]:
    done = {"queries": 0, "orms": 0}
    deadline = time.perf_counter() + seconds
    with WorklistClient("127.0.0.1", broker.dicom_port) as client:
        n = 0
        while time.perf_counter() < deadline:
            client.find(identifier("station"))
            client.find(identifier("name"))
            done["queries"] += 2
            asyncio.run(_one_ack_n(broker.port, 7_000_000 + n))
            done["orms"] += 1
            n += 1
    return done


async def _one_ack_n(port: int, n: int) -> None:
    async with MllpClient("127.0.0.1", port, timeout=5) as client:
        await client.send(order(n).encode())


def main(quick: bool) -> int:
    pynetdicom_patches.apply(fast_path=True)  # the SCU as the broker's own tools run it
    steps = 10_000 if quick else 100_000
    results: dict[str, Any] = {"machine": machine(), "quick": quick, "targets": TARGETS,
                               "steps": steps}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results["populate_s"] = round(populate(folder / "broker.sqlite", list(items(steps))), 1)
        broker = BrokerUnderTest(folder, "mappings.directory="
                                 + str(_orc18_mappings(folder)))
        started = time.perf_counter()
        broker.start()  # returns once both ports accept connections
        try:
            results["ready_s"] = round(wait_ready(broker, started), 3)
            assert broker.proc is not None
            results["rss_after_start_mb"] = round(rss_mb(broker.proc.pid, "VmRSS"), 1)
            results["load"] = mixed_load(broker, 5 if quick else 20)
            visible = asyncio.run(orm_to_visible(broker.port, broker.dicom_port,
                                                 50 if quick else 200))
            results["orm_to_visible"] = {"n": len(visible),
                                         "p50_ms": round(percentile(visible, 50), 2),
                                         "p99_ms": round(percentile(visible, 99), 2)}
            results["peak_rss_mb"] = round(rss_mb(broker.proc.pid, "VmHWM"), 1)
        finally:
            broker.stop()
    v = results["orm_to_visible"]
    rows = [("figure", "measured", "target", "ratio"),
            (f"ready to serve (C-ECHO + MLLP ACK) with {steps:,} steps, s",
             f"{results['ready_s']}", f"≤ {TARGETS['ready_s']}",
             f"{results['ready_s'] / TARGETS['ready_s']:.2f}×"),
            (f"peak RSS after a mixed load, {steps:,} steps, MB", f"{results['peak_rss_mb']}",
             f"≤ {TARGETS['rss_mb_100k']}",
             f"{results['peak_rss_mb'] / TARGETS['rss_mb_100k']:.2f}×"),
            ("ORM sent → step returned by C-FIND, p50 / p99 ms", f"{v['p50_ms']} / {v['p99_ms']}",
             "", "")]
    write_results("footprint_quick" if quick else "footprint", results, rows)
    ok = results["ready_s"] <= TARGETS["ready_s"] and results["peak_rss_mb"] <= TARGETS[
        "rss_mb_100k"]
    return 0 if ok or quick else 1


def _orc18_mappings(folder: Path) -> Path:
    from tests.support.broker import mappings_with_orc18_station

    return mappings_with_orc18_station(folder)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10,000 steps (CI)")
    sys.exit(main(parser.parse_args().quick))

