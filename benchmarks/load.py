"""Load: 100 MLLP connections sending ORM^O01 (each waits for its ACK, as a RIS does) and 64
DICOM associations sending worklist C-FINDs (station CT01 + today, 36 matches, on a
10,000-step worklist), all at once for a bounded time. Zero errors expected; p50/p99 ACK and
C-FIND latencies, counts and errors are reported. The HL7 senders run in this process, the
C-FIND clients in a second one (lean wire clients, requests encoded before the clock starts).

    python benchmarks/load.py               # 60 s, writes benchmarks/results/load.*
    python benchmarks/load.py --quick       # 10 s
    python benchmarks/load.py --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from benchmarks import dicom_wire
from benchmarks.common import BrokerUnderTest, machine, percentile, write_results
from benchmarks.mwl_query import identifier, populate
from benchmarks.worklist_data import TODAY_MATCHES, items
from broker.hl7.mllp import MllpClient
from tests.support.samples import order

CONNECTIONS = 100
ASSOCIATIONS = 64
WORKLIST = 10_000
FIRST_ORDER = 50_000_000


async def hl7_sender(port: int, k: int, deadline: float, latencies: list[float],
                     errors: list[str]) -> None:
    n = FIRST_ORDER + k * 1_000_000
    try:
        async with MllpClient("127.0.0.1", port, timeout=30) as client:
            while time.monotonic() < deadline:
                payload = order(n).encode()
                started = time.perf_counter()
                answer = await client.send(payload)
                latencies.append((time.perf_counter() - started) * 1000)
                if b"\rMSA|AA|" not in answer:
                    errors.append(f"MSG{n:08d}: {answer[:160]!r}")
                n += 1
    except (OSError, TimeoutError) as exc:
        errors.append(f"connection {k}: {type(exc).__name__} {exc}")


async def hl7_load(port: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    started = time.perf_counter()
    await asyncio.gather(*(hl7_sender(port, k, deadline, latencies, errors)
                           for k in range(CONNECTIONS)))
    return summary(latencies, errors, time.perf_counter() - started)


async def find_client(port: int, k: int, request: bytes, deadline: float,
                      latencies: list[float], errors: list[str]) -> None:
    try:
        assoc = await asyncio.wait_for(dicom_wire.Association.open(
            "127.0.0.1", port, f"LOAD{k:03d}", "MWLBROKER", ModalityWorklistInformationFind),
            30)
        while time.monotonic() < deadline:
            started = time.perf_counter()
            matches, final = await asyncio.wait_for(assoc.find(request), 60)
            latencies.append((time.perf_counter() - started) * 1000)
            if final.status != 0 or matches != TODAY_MATCHES:
                errors.append(f"association {k}: {matches} matches, status {final.status:#06x}")
        await asyncio.wait_for(assoc.release(), 30)
    except (OSError, EOFError, TimeoutError, dicom_wire.WireError) as exc:
        errors.append(f"association {k}: {type(exc).__name__} {exc}")


async def find_load(port: int, seconds: float) -> dict[str, Any]:
    request = dicom_wire.c_find(1, ModalityWorklistInformationFind,
                                dicom_wire.encode_dataset(identifier("station")))
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    started = time.perf_counter()
    await asyncio.gather(*(find_client(port, k, request, deadline, latencies, errors)
                           for k in range(ASSOCIATIONS)))
    return summary(latencies, errors, time.perf_counter() - started)


def _find_process(port: int, seconds: float, start_at: float) -> dict[str, Any]:
    time.sleep(max(0.0, start_at - time.time()))
    return asyncio.run(find_load(port, seconds))


def summary(latencies: list[float], errors: list[str], elapsed: float) -> dict[str, Any]:
    return {"requests": len(latencies), "seconds": round(elapsed, 1),
            "per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(percentile(latencies, 50), 1),
            "p99_ms": round(percentile(latencies, 99), 1),
            "max_ms": round(max(latencies, default=float("nan")), 1),
            "errors": len(errors), "error_examples": errors[:5]}


def main(seconds: float, quick: bool) -> int:
    results: dict[str, Any] = {"machine": machine(), "seconds": seconds,
                               "mllp_connections": CONNECTIONS,
                               "dicom_associations": ASSOCIATIONS, "worklist_steps": WORKLIST}
    with tempfile.TemporaryDirectory() as tmp:
        # every association comes from 127.0.0.1 here: no per-address cap
        broker = BrokerUnderTest(Path(tmp), "logging.level=WARNING",
                                 "dicom.max_associations_per_address=0")
        populate(broker.db, list(items(WORKLIST)))
        with broker, multiprocessing.get_context("spawn").Pool(1) as pool:
            start_at = time.time() + 2.0  # the C-FIND process is up by then
            finds = pool.apply_async(_find_process, (broker.dicom_port, seconds, start_at))
            time.sleep(max(0.0, start_at - time.time()))
            results["hl7"] = asyncio.run(hl7_load(broker.port, seconds))
            results["cfind"] = finds.get(seconds + 300)
            alive = broker.proc is not None and broker.proc.poll() is None
            exit_code = broker.stop()
    results["sigterm_exit_code"] = exit_code
    hl7, cfind = results["hl7"], results["cfind"]
    rows = [("figure", "measured"),
            (f"{CONNECTIONS} MLLP connections: ORMs acknowledged / per s",
             f"{hl7['requests']} / {hl7['per_s']}"),
            ("ACK latency p50 / p99 / max ms",
             f"{hl7['p50_ms']} / {hl7['p99_ms']} / {hl7['max_ms']}"),
            (f"{ASSOCIATIONS} DICOM associations: C-FINDs ({TODAY_MATCHES} matches each, "
             f"{WORKLIST} steps) / per s", f"{cfind['requests']} / {cfind['per_s']}"),
            ("C-FIND latency p50 / p99 / max ms",
             f"{cfind['p50_ms']} / {cfind['p99_ms']} / {cfind['max_ms']}"),
            ("errors (HL7 / C-FIND)", f"{hl7['errors']} / {cfind['errors']}"),
            ("seconds (both loads at once)", f"{seconds:g}"),
            ("broker alive at the end / exit code on SIGTERM",
             f"{'yes' if alive else 'NO'} / {exit_code}")]
    write_results("load_quick" if quick else "load", results, rows)
    ok = alive and exit_code == 0 and not hl7["errors"] and not cfind["errors"]
    ok = ok and hl7["requests"] > 0 and cfind["requests"] > 0
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 s")
    parser.add_argument("--seconds", type=float, help="how long both loads run (60)")
    args = parser.parse_args()
    length = args.seconds or (10.0 if args.quick else 60.0)
    sys.exit(main(length, args.quick))
