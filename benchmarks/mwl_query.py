"""Worklist C-FIND latency at 1,000 / 10,000 / 100,000 scheduled steps: the broker beside
DCMTK wlmscpfs and Orthanc's worklist plugin serving the same items as .wl files.

Queries: station (CT01 + today, 36 matches at every size), patient (Patient ID, 1 match),
name wildcard (NEEDLE*, 5 matches). Latency with a client that keeps its association open
(pynetdicom, TCP_NODELAY) and with DCMTK findscu (one association per query), then 64
associations querying at once.

    python benchmarks/mwl_query.py           # full run
    python benchmarks/mwl_query.py --quick   # bounded (CI)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import BrokerUnderTest, machine, percentile, write_results
from benchmarks.peers import Orthanc, Wlmscpfs
from benchmarks.worklist_data import (
    PATIENT_QUERY_ID,
    PATIENTS_NAMED_NEEDLE,
    STATION,
    TODAY,
    TODAY_MATCHES,
    items,
    write_files,
)
from broker.config import DatabaseSettings
from broker.dicom import pynetdicom_patches
from broker.dicom.client import WorklistClient, build_query, query_keys
from broker.model.orders import OrderChange
from broker.store.factory import open_store
from broker.store.unit_of_work import UnitOfWork
from broker.workflow.orders import apply

TARGETS = {"station_p50_ms_100k": 30.0, "speedup_vs_peers_10k": 20.0,
           "flatness_100k_over_1k": 2.0}
QUERIES: dict[str, tuple[dict[str, Any], int]] = {
    "station": ({"station": STATION, "date": TODAY}, TODAY_MATCHES),
    "patient": ({"extra": [f"PatientID={PATIENT_QUERY_ID}"]}, 1),
    "name": ({"extra": ["PatientName=NEEDLE*"]}, PATIENTS_NAMED_NEEDLE),
}


def _apply_all(uow: UnitOfWork, orders: list[OrderChange]) -> None:
    for order in orders:
        apply(uow.orders, order)


def populate(db: Path | str, orders: list[OrderChange]) -> float:
    """Store ``orders`` in the SQLite file or the PostgreSQL database (a URL) ``db``."""
    started = time.perf_counter()
    text = str(db)
    if text.startswith(("postgresql://", "postgres://")):
        store = open_store(DatabaseSettings(url=text))
    else:
        store = open_store(DatabaseSettings(path=text, synchronous="NORMAL", url=""))
    writer = store.writer
    writer.start()
    try:
        for i in range(0, len(orders), 2000):
            writer.run_sync(partial(_apply_all, orders=orders[i:i + 2000]))
    finally:
        writer.stop()
        store.close()
    return time.perf_counter() - started


def identifier(name: str) -> Any:
    spec, _ = QUERIES[name]
    return build_query(query_keys(spec.get("extra", ()), station=spec.get("station", ""),
                                  date=spec.get("date", "")))


def keep_open(port: int, called: str, name: str, reps: int) -> dict[str, Any]:
    expected = QUERIES[name][1]
    times = []
    query = identifier(name)
    with WorklistClient("127.0.0.1", port, called=called) as client:
        client.find(query)  # warm-up
        for _ in range(reps):
            t0 = time.perf_counter()
            result = client.find(query)
            times.append((time.perf_counter() - t0) * 1000)
            if len(result.matches) != expected or result.status != 0:
                raise RuntimeError(f"{called} {name}: {len(result.matches)} matches, "
                                   f"status {result.status:#06x}, expected {expected}")
    return {"p50_ms": round(statistics.median(times), 2),
            "p99_ms": round(percentile(times, 99), 2), "n": reps}


def findscu_times(port: int, called: str, folder: Path, reps: int) -> dict[str, Any]:
    query_file = folder / "station.dcm"
    identifier("station").save_as(query_file, implicit_vr=True, little_endian=True)
    env = {**os.environ, "TCP_NODELAY": "1"}
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = subprocess.run(["findscu", "-W", "-aec", called, "-aet", "FINDSCU", "127.0.0.1",
                              str(port), str(query_file)], capture_output=True, env=env,
                             timeout=300)
        times.append((time.perf_counter() - t0) * 1000)
        if out.returncode != 0:
            raise RuntimeError(f"findscu against {called} failed: {out.stderr[-300:]!r}")
    return {"p50_ms": round(statistics.median(times), 2),
            "p99_ms": round(percentile(times, 99), 2), "n": reps}


def concurrent(port: int, associations: int, seconds: float) -> dict[str, Any]:
    """Each thread keeps one association and sends station queries until time is up."""
    times: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    query = identifier("station")

    def run(k: int) -> None:
        try:
            with WorklistClient("127.0.0.1", port, calling=f"LOAD{k:03d}") as client:
                while time.monotonic() < deadline:
                    t0 = time.perf_counter()
                    result = client.find(query)
                    elapsed = (time.perf_counter() - t0) * 1000
                    with lock:
                        times.append(elapsed)
                        if result.status != 0 or len(result.matches) != TODAY_MATCHES:
                            failures.append(f"status {result.status:#06x}")
        except Exception as exc:  # counted: a rejected association is a failure
            with lock:
                failures.append(repr(exc))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(associations)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    elapsed = time.perf_counter() - started
    return {"associations": associations, "seconds": round(elapsed, 1), "queries": len(times),
            "per_s": round(len(times) / elapsed, 1), "failures": len(failures),
            "failure_examples": failures[:3],
            "p50_ms": round(percentile(times, 50), 2), "p99_ms": round(percentile(times, 99), 2)}


def measure_peer(peer_cls: Callable[[Path], Any], folder: Path, orders: list[OrderChange],
                 reps: int) -> dict[str, Any]:
    peer = peer_cls(folder)
    write_files(orders, peer.items_folder)
    with peer:
        return {"station": keep_open(peer.port, peer.ae_title, "station", reps),
                "patient": keep_open(peer.port, peer.ae_title, "patient", reps),
                "findscu_station": findscu_times(peer.port, peer.ae_title, folder, reps)}


def main(quick: bool) -> int:
    pynetdicom_patches.apply(fast_path=True)  # the SCU as the broker's own tools run it
    sizes = [1000, 10000] if quick else [1000, 10000, 100000]
    peer_sizes = {1000, 10000} if quick else {1000, 10000, 100000}
    reps = 20 if quick else 100
    peer_reps = {1000: 5, 10000: 3, 100000: 2} if quick else {1000: 20, 10000: 10, 100000: 3}
    load_seconds = 5.0 if quick else 30.0
    results: dict[str, Any] = {"machine": machine(), "quick": quick, "targets": TARGETS,
                               "sizes": {}}
    for size in sizes:
        orders = list(items(size))
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            # 64 associations from 127.0.0.1 at once: no per-address cap
            broker = BrokerUnderTest(folder, "logging.level=WARNING",
                                     "dicom.max_associations_per_address=0")
            entry: dict[str, Any] = {"populate_s": round(populate(broker.db, orders), 1)}
            with broker:
                for name in QUERIES:
                    entry[name] = keep_open(broker.dicom_port, "MWLBROKER", name, reps)
                entry["findscu_station"] = findscu_times(broker.dicom_port, "MWLBROKER",
                                                         folder, min(reps, 20))
                if size == sizes[-1]:
                    results["concurrent"] = concurrent(broker.dicom_port, 64, load_seconds)
            if size in peer_sizes:
                for label, cls in (("wlmscpfs", Wlmscpfs), ("orthanc", Orthanc)):
                    if cls.available():
                        entry[label] = measure_peer(cls, folder / label, orders,
                                                    peer_reps[size])
        results["sizes"][str(size)] = entry
        print(f"{size}: {entry}", flush=True)
    return report(results, quick)


def report(results: dict[str, Any], quick: bool) -> int:
    sizes = results["sizes"]
    rows: list[tuple[str, ...]] = [("figure", "measured", "target", "ratio")]
    for size, e in sizes.items():
        for name in QUERIES:
            rows.append((f"{size} steps, {name} query p50 / p99 ms (kept association)",
                         f"{e[name]['p50_ms']} / {e[name]['p99_ms']}", "", ""))
        rows.append((f"{size} steps, station query with findscu p50 ms",
                     f"{e['findscu_station']['p50_ms']}", "", ""))
        for peer in ("wlmscpfs", "orthanc"):
            if peer in e:
                ratio = e[peer]["station"]["p50_ms"] / e["station"]["p50_ms"]
                rows.append((f"{size} steps, {peer} station query p50 ms (kept / findscu)",
                             f"{e[peer]['station']['p50_ms']} / "
                             f"{e[peer]['findscu_station']['p50_ms']}",
                             "broker ≥ 20× faster at 10,000" if size == "10000" else "",
                             f"broker {ratio:.1f}× faster"))
    largest = max(sizes, key=int)
    p50 = sizes[largest]["station"]["p50_ms"]
    rows.append((f"station p50 at {largest} steps (ms)", f"{p50}", "≤ 30", ""))
    flat = sizes[largest]["station"]["p50_ms"] / sizes["1000"]["station"]["p50_ms"]
    rows.append((f"station p50 {largest} / 1000", f"{flat:.2f}", "≤ 2", ""))
    c = results["concurrent"]
    rows.append((f"{c['associations']} associations × {c['seconds']} s: queries, failures",
                 f"{c['queries']} ({c['per_s']}/s), {c['failures']} failures",
                 "0 failures", ""))
    rows.append(("concurrent station query p50 / p99 ms", f"{c['p50_ms']} / {c['p99_ms']}",
                 "", ""))
    write_results("mwl_query_quick" if quick else "mwl_query", results, rows)
    return 1 if c["failures"] else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short bounded run (CI)")
    sys.exit(main(parser.parse_args().quick))
