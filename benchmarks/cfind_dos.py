"""Pathological C-FIND queries must not freeze the broker (issue #11): HL7 ACK latency while
stock pynetdicom SCUs send, in a loop, the worst wildcard queries the caps accept and ones
over the caps, against a worklist whose patients all have long names.

The worklist: N scheduled steps (2,000 quick, 10,000 full), every Patient's Name with a
64-character family name (the PN component maximum) and 16 patients with a 1,000-character
one (sent as HL7 ORM^O01). The queries (each SCU in its own process, one association kept
open, TCP_NODELAY):

- ``pn_worst``: Patient's Name ``*A*A…*X`` with 16 wildcards (the default cap), matching
  nothing: every stored name is matched (a backtracking ``.*`` took hours on one name);
- ``lo_worst``: Accession Number ``*0*0…*X``, 16 wildcards, the same on a non-PN key;
- ``pn_over``: 17 wildcards: refused C000 with an Error Comment, without matching anything.

Meanwhile a plain asyncio MLLP client sends ORM^O01 at a steady rate and times each ACK; the
same is measured before the queries start (baseline). Broker CPU from /proc/<pid>/stat.

    python benchmarks/cfind_dos.py            # full run, writes benchmarks/results/cfind_dos.*
    python benchmarks/cfind_dos.py --quick    # bounded short run (< 30 s)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import multiprocessing as mp
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import BrokerUnderTest, machine, percentile, write_results
from benchmarks.mwl_query import populate
from benchmarks.worklist_data import items
from broker.dicom.client import build_query, query_keys
from broker.model.orders import OrderChange, Patient
from tests.support.samples import order

TARGETS = {"ack_p99_ms_under_queries": 100.0}
WILDCARDS = 16
QUERIES: dict[str, tuple[str, str, int]] = {  # name → (key, value, expected final status)
    "pn_worst": ("PatientName", "*A" * (WILDCARDS - 1) + "*X", 0x0000),
    "lo_worst": ("AccessionNumber", "*0" * (WILDCARDS - 1) + "*X", 0x0000),
    "pn_over": ("PatientName", "*A" * WILDCARDS + "*X", 0xC000),
}
VERY_LONG = 16  # patients with a 1,000-character family name (sent over HL7)


def long_named(orders: list[OrderChange]) -> list[OrderChange]:
    """The same orders, each patient's family name padded to 64 characters with 'A'."""
    out = []
    for change in orders:
        patient = change.patient
        assert patient is not None
        attrs = dict(patient.attrs)
        family, _, given = str(attrs["PatientName"]).partition("^")
        attrs["PatientName"] = f"{family.rjust(64, 'A')}^{given}"
        out.append(dataclasses.replace(change, patient=Patient(patient.key, attrs)))
    return out


class _LostResponses:
    """Counts pynetdicom's own warning that its reactor took a response meant for a
    ``send_*()`` call (the stock requestor race, docs/pynetdicom-requestor-race.md): proof
    that the broker's answer reached the client."""

    def __init__(self) -> None:
        import logging

        self.count = 0
        outer = self

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "Received unexpected C-FIND-RSP" in record.getMessage():
                    outer.count += 1

        logging.getLogger("pynetdicom").addHandler(Handler(logging.WARNING))


def scu(port: int, name: str, stop: Any, ready: Any, results: Any) -> None:
    """One stock pynetdicom SCU (no broker patches) sending one query until told to stop.
    A query left without its answer because pynetdicom itself dropped the response is counted
    apart (``client_lost``) and the association opened again; any other missing or wrong
    answer is a failure."""
    from pynetdicom import AE
    from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore

    key, value, expected = QUERIES[name]
    identifier = build_query(query_keys([f"{key}={value}"]))
    lost = _LostResponses()
    ae = AE(ae_title=f"DOS{os.getpid() % 10000:04d}")
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.acse_timeout = ae.network_timeout = 120
    ae.dimse_timeout = 10  # a response pynetdicom dropped is not waited for 60 s

    def associate() -> Any:
        assoc = ae.associate("127.0.0.1", port, ae_title="MWLBROKER")
        sock = assoc.dul.socket.socket if assoc.dul.socket else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return assoc

    assoc = associate()
    times: list[float] = []
    failures: list[str] = []
    client_lost = 0
    ready.put(name)
    if not assoc.is_established:
        results.put((name, times, ["association failed"], 0))
        return
    try:
        while not stop.is_set():
            if not assoc.is_established:
                assoc = associate()
                if not assoc.is_established:
                    failures.append("association failed")
                    break
            t0, lost_before = time.perf_counter(), lost.count
            final = -1
            for status, _ in assoc.send_c_find(identifier, ModalityWorklistInformationFind):
                if not status:
                    break
                final = int(status.Status)
            if final == -1 and lost.count > lost_before:
                client_lost += 1
                continue
            times.append((time.perf_counter() - t0) * 1000)
            if final != expected:
                failures.append("no answer" if final == -1 else f"status {final:#06x}")
    finally:
        if assoc.is_established:
            assoc.release()
        results.put((name, times, failures, client_lost))


async def send_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   payload: bytes) -> bool:
    writer.write(b"\x0b" + payload + b"\x1c\x0d")
    await writer.drain()
    answer = await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), 30)
    return b"MSA|AA|" in answer


async def hl7_latency(port: int, rate: float, seconds: float, first: int) -> dict[str, Any]:
    """ORM^O01 at a steady rate on one connection; each ACK timed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    latencies: list[float] = []
    failures = 0
    count = int(rate * seconds)
    try:
        start = time.perf_counter()
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            payload = order(first + i).encode()
            t0 = time.perf_counter()
            failures += not await send_one(reader, writer, payload)
            latencies.append((time.perf_counter() - t0) * 1000)
    finally:
        writer.close()
        await writer.wait_closed()
    return {"messages": count, "p50_ms": round(percentile(latencies, 50), 2),
            "p99_ms": round(percentile(latencies, 99), 2),
            "max_ms": round(max(latencies), 2), "failures": failures}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def store_very_long(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for n in range(VERY_LONG):
            name = f"{'A' * 1000}^LONG{n}"
            if not await send_one(reader, writer, order(9_000_000 + n, patient_name=name)
                                  .encode()):
                raise RuntimeError("a long-named order was not accepted")
    finally:
        writer.close()
        await writer.wait_closed()


def run_scus(port: int, scus: dict[str, int]) -> tuple[Any, Any, list[Any]]:
    """Start the SCU processes; returns once each has its association."""
    ctx = mp.get_context("spawn")
    stop, ready, queue = ctx.Event(), ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=scu, args=(port, name, stop, ready, queue))
             for name, n in scus.items() for _ in range(n)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    return stop, queue, procs


async def under_queries(broker: BrokerUnderTest, scus: dict[str, int], rate: float,
                        seconds: float, first: int) -> dict[str, Any]:
    """HL7 ACK latency and broker CPU while ``scus`` query in a loop; their query times."""
    assert broker.proc is not None
    stop, queue, procs = await asyncio.to_thread(run_scus, broker.dicom_port, scus)
    try:
        await asyncio.sleep(0.5)  # each SCU's first query is under way
        cpu0, t0 = cpu_seconds(broker.proc.pid), time.perf_counter()
        entry: dict[str, Any] = {"scus": scus}
        entry["hl7"] = await hl7_latency(broker.port, rate, seconds, first)
        cpu1, t1 = cpu_seconds(broker.proc.pid), time.perf_counter()
    finally:
        stop.set()
        gathered = [queue.get(timeout=300) for _ in procs]
        for p in procs:
            p.join(60)
    entry["broker_cpu_percent"] = round(100 * (cpu1 - cpu0) / (t1 - t0), 1)
    per_query: dict[str, Any] = {}
    for name, times, failures, client_lost in gathered:
        e = per_query.setdefault(name, {"times": [], "failures": [], "client_lost": 0})
        e["times"] += times
        e["failures"] += failures
        e["client_lost"] += client_lost
    entry["query_ms"] = {
        name: {"n": len(e["times"]), "p50": round(percentile(e["times"], 50), 2),
               "max": round(max(e["times"], default=float("nan")), 2),
               "failures": len(e["failures"]), "failure_examples": e["failures"][:3],
               "client_lost": e["client_lost"]}
        for name, e in per_query.items()}
    return entry


async def main(quick: bool) -> int:
    size, seconds, rate = (2000, 4.0, 50.0) if quick else (10000, 30.0, 50.0)
    results: dict[str, Any] = {"machine": machine(), "quick": quick, "targets": TARGETS,
                               "steps": size + VERY_LONG, "hl7_rate_per_s": rate,
                               "queries": {k: v[1] for k, v in QUERIES.items()}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker = BrokerUnderTest(folder, "logging.level=ERROR",
                                 "dicom.max_associations_per_address=0")
        populate(broker.db, long_named(list(items(size))))
        with broker:
            await store_very_long(broker.port)
            results["baseline"] = {"hl7": await hl7_latency(broker.port, rate, seconds / 2, 0)}
            results["one_worst_query"] = await under_queries(
                broker, {"pn_worst": 1}, rate, seconds, 100_000)
            results["mixed"] = await under_queries(
                broker, {"pn_worst": 2, "lo_worst": 1, "pn_over": 1}, rate, seconds, 200_000)
    return report(results, quick)


def report(results: dict[str, Any], quick: bool) -> int:
    target = TARGETS["ack_p99_ms_under_queries"]
    table: list[tuple[str, ...]] = [("figure", "measured", "target", "ratio")]
    failures = 0
    for label, key in (("no query", "baseline"), ("1 SCU: pn_worst", "one_worst_query"),
                       ("4 SCUs: 2 pn_worst, lo_worst, pn_over", "mixed")):
        entry = results[key]
        h = entry["hl7"]
        failures += h["failures"]
        table.append((f"HL7 ACK p50 / p99 / max ms, {label}",
                      f"{h['p50_ms']} / {h['p99_ms']} / {h['max_ms']}",
                      "" if key == "baseline" else f"p99 < {target}",
                      "" if key == "baseline" else f"{h['p99_ms'] / target:.2f}×"))
        for name, e in entry.get("query_ms", {}).items():
            failures += e["failures"] + (e["n"] == 0)
            lost = (f"; {e['client_lost']} dropped by pynetdicom itself"
                    if e.get("client_lost") else "")
            table.append((f"  {name} query p50 / max ms (n)", f"{e['p50']} / {e['max']} "
                           f"({e['n']}{lost})", "", ""))
        if "broker_cpu_percent" in entry:
            table.append(("  broker CPU", f"{entry['broker_cpu_percent']} %", "", ""))
    write_results("cfind_dos_quick" if quick else "cfind_dos", results, table)
    if failures:
        print(f"FAILED: {failures} wrong answers or idle SCUs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short bounded run (< 30 s)")
    sys.exit(asyncio.run(main(parser.parse_args().quick)))
