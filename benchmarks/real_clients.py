"""Issue 14's client matrix: the worklist and MPPS as clients the project did not write see
them, beside DCMTK ``wlmscpfs`` and Orthanc's worklist plugin serving the same items.

Worklist (station CT01 + today, 36 matches, on N items; the peers read the same items as .wl
files, benchmarks/mwl_query.py's ``write_files``):

1. DCMTK ``findscu`` as shipped (Nagle on: no ``TCP_NODELAY`` in its environment), 20 query
   files on one association: wall time / 20;
2. one ``findscu`` process per query (association set-up and tear-down included);
3. a stock pynetdicom 3.0.4 SCU in a process of its own (nothing of the broker imported, so
   nothing patched), one association kept open, 20 queries: p50.

MPPS: 8 stock pynetdicom SCU processes, each its own association, N-CREATE IN PROGRESS +
N-SET COMPLETED (unscheduled) pairs: pairs/s from the first request to the last answer.

Broker CPU (utime + stime of its process from /proc) per query and per pair beside each
figure; the load average says what else ran.

    python benchmarks/real_clients.py --quick   # 1,000 items, fewer repetitions
    python benchmarks/real_clients.py           # 10,000 items
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import BrokerUnderTest, machine, write_results
from benchmarks.ha_soak import cpu_seconds, others
from benchmarks.mwl_query import identifier, populate
from benchmarks.peers import Orthanc, Wlmscpfs
from benchmarks.worklist_data import TODAY_MATCHES, items, write_files

TARGETS = {"findscu_one_association_ms": 10.0, "findscu_vs_wlmscpfs": 50.0,
           "stock_pynetdicom_vs_wlmscpfs": 20.0, "mpps_stock_pairs_per_s": 120.0,
           "mpps_cpu_ms_per_pair": 1.5}

STOCK_FIND = textwrap.dedent("""
    import json, statistics, sys, time
    from pydicom import dcmread
    from pynetdicom import AE, _config
    from pynetdicom.sop_class import ModalityWorklistInformationFind as MWL
    port, called, path, reps, expected = (int(sys.argv[1]), sys.argv[2], sys.argv[3],
                                          int(sys.argv[4]), int(sys.argv[5]))
    # pynetdicom's documented switch: no pretty-printing of each response identifier (done
    # at every log level by default)
    _config.LOG_RESPONSE_IDENTIFIERS = sys.argv[6] != "quiet"
    query = dcmread(path, force=True)
    ae = AE(ae_title="STOCKSCU")
    ae.dimse_timeout = 20
    ae.add_requested_context(MWL)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established, "association refused"
    times, wrong, reopened, cpu = [], 0, 0, 0.0
    deadline = time.monotonic() + 30  # a peer that stalls each answer: a bounded run
    for n in range(reps + 1):
        if n > 0 and time.monotonic() > deadline:
            break
        if not assoc.is_established:  # the peer ended it: a new one, counted
            assoc = ae.associate("127.0.0.1", port, ae_title=called)
            reopened += 1
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            matches = sum(1 for status, ds in assoc.send_c_find(query, MWL)
                          if status and status.Status in (0xFF00, 0xFF01))
        except RuntimeError:  # ended while asking
            assoc = ae.associate("127.0.0.1", port, ae_title=called)
            reopened += 1
            continue
        if n:  # the first one warms up
            times.append((time.perf_counter() - t0) * 1000)
            cpu += time.process_time() - c0
            wrong += matches != expected
    if assoc.is_established:
        assoc.release()
    print(json.dumps({"p50_ms": round(statistics.median(times), 2), "n": len(times),
                      "client_cpu_ms_per_query": round(cpu * 1000 / max(1, len(times)), 2),
                      "wrong_answers": wrong, "associations_reopened": reopened}))
""")

STOCK_MPPS = textwrap.dedent("""
    import json, sys, time
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid
    from pynetdicom import AE
    from pynetdicom.sop_class import ModalityPerformedProcedureStep as MPPS
    port, station = int(sys.argv[1]), sys.argv[2]
    pairs, start_at = int(sys.argv[3]), float(sys.argv[4])
    ae = AE(ae_title=station)
    ae.dimse_timeout = 5  # stock pynetdicom loses a response now and then (its requestor race)
    ae.add_requested_context(MPPS)
    assoc = ae.associate("127.0.0.1", port, ae_title="MWLBROKER")
    assert assoc.is_established, "association refused"
    time.sleep(max(0.0, start_at - time.time()))
    ok = reopened = lost = 0
    lost_s = 0.0
    for n in range(pairs):
        if not assoc.is_established:  # ended (by the peer, or by pynetdicom): a new one
            assoc = ae.associate("127.0.0.1", port, ae_title="MWLBROKER")
            reopened += 1
            if not assoc.is_established:
                break
        uid = generate_uid()
        ds = Dataset()
        ds.PerformedProcedureStepStatus = "IN PROGRESS"
        ds.Modality = "CT"
        ds.PerformedStationAETitle = station
        ds.PerformedProcedureStepStartDate = "20261202"
        ds.PerformedProcedureStepStartTime = "101500"
        ds.PatientID = f"{station}{n}"
        ds.PatientName = "STOCK^SCU"
        ds.PerformedProcedureStepID = f"PPS{n}"
        ds.ScheduledStepAttributesSequence = [Dataset()]
        ds.ScheduledStepAttributesSequence[0].StudyInstanceUID = generate_uid()
        t0 = time.monotonic()
        try:
            status, _ = assoc.send_n_create(ds, MPPS, uid)
        except RuntimeError:
            continue
        if getattr(status, "Status", None) != 0:
            lost += 1
            lost_s += time.monotonic() - t0
            continue
        done = Dataset()
        done.PerformedProcedureStepStatus = "COMPLETED"
        done.PerformedProcedureStepEndDate = "20261202"
        done.PerformedProcedureStepEndTime = "103000"
        t0 = time.monotonic()
        try:
            status, _ = assoc.send_n_set(done, MPPS, uid)
        except RuntimeError:
            continue
        if getattr(status, "Status", None) == 0:
            ok += 1
        else:
            lost += 1
            lost_s += time.monotonic() - t0
    if assoc.is_established:
        assoc.release()
    print(json.dumps({"pairs": ok, "ended": time.time(), "reopened": reopened, "lost": lost,
                      "lost_s": lost_s}))
""")


def shipped_env() -> dict[str, str]:
    """The environment of a peer as shipped: no TCP_NODELAY for DCMTK."""
    return {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}


def findscu(port: int, called: str, query: Path, files: int) -> float:
    """Wall time (ms) of one findscu run with ``files`` query files on one association."""
    t0 = time.perf_counter()
    out = subprocess.run(["findscu", "-W", "-aec", called, "-aet", "FINDSCU", "127.0.0.1",
                          str(port), *[str(query)] * files], capture_output=True,
                         env=shipped_env(), timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"findscu against {called} failed: {out.stderr[-300:]!r}")
    return (time.perf_counter() - t0) * 1000


def stock_find(port: int, called: str, query: Path, reps: int, identifiers_logged: bool = True
               ) -> dict[str, Any]:
    """A stock pynetdicom SCU, as installed or with ``_config.LOG_RESPONSE_IDENTIFIERS``
    off (``identifiers_logged``)."""
    out = subprocess.run([sys.executable, "-c", STOCK_FIND, str(port), called, str(query),
                          str(reps), str(TODAY_MATCHES),
                          "logged" if identifiers_logged else "quiet"],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"stock pynetdicom SCU against {called}: {out.stderr[-500:]}")
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return result


def worklist(port: int, called: str, query: Path, reps: int, pid: int | None
             ) -> dict[str, Any]:
    """The three client figures against one server (CPU per query when ``pid``)."""
    out: dict[str, Any] = {}
    findscu(port, called, query, 2)  # warm-up
    cpu0 = cpu_seconds(pid)
    runs = [findscu(port, called, query, 20) / 20 for _ in range(max(1, reps // 10))]
    out["findscu_20_on_one_association_ms"] = round(statistics.median(runs), 2)
    if pid:
        out["findscu_cpu_ms_per_query"] = round(
            (cpu_seconds(pid) - cpu0) * 1000 / (20 * len(runs)), 3)
    singles = [findscu(port, called, query, 1) for _ in range(max(3, reps // 4))]
    out["findscu_one_process_per_query_ms"] = round(statistics.median(singles), 2)
    cpu0 = cpu_seconds(pid)
    out["stock_pynetdicom_kept_open"] = stock_find(port, called, query, reps)
    if pid:
        out["stock_pynetdicom_cpu_ms_per_query"] = round(
            (cpu_seconds(pid) - cpu0) * 1000 / (reps + 1), 3)
    out["stock_pynetdicom_quiet"] = stock_find(port, called, query, reps, False)
    return out


def mpps_stock(port: int, pid: int | None, per_process: int) -> dict[str, Any]:
    start_at = time.time() + 3.0  # every process has its association by then
    procs = [subprocess.Popen([sys.executable, "-c", STOCK_MPPS, str(port), f"STOCK{k:02d}",
                               str(per_process), str(start_at)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for k in range(8)]
    time.sleep(max(0.0, start_at - time.time()))
    cpu0 = cpu_seconds(pid)
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"stock MPPS SCU failed: {stderr[-500:]}")
        results.append(json.loads(stdout.splitlines()[-1]))
    cpu = cpu_seconds(pid) - cpu0
    pairs = sum(r["pairs"] for r in results)
    # a request whose answer the stock SCU lost waits for its DIMSE timeout: that wait is
    # the client's, not the broker's (reported, and taken out of the process's time)
    seconds = max(r["ended"] - r["lost_s"] for r in results) - start_at
    return {"processes": 8, "pairs": pairs, "sent": 8 * per_process,
            "associations_reopened": sum(r["reopened"] for r in results),
            "answers_lost_by_the_scu": sum(r["lost"] for r in results),
            "seconds_waited_for_lost_answers": round(sum(r["lost_s"] for r in results), 1),
            "seconds": round(seconds, 2), "pairs_per_s": round(pairs / seconds, 1),
            "broker_cpu_ms_per_pair": round(cpu * 1000 / max(pairs, 1), 3)}


def main(quick: bool) -> int:
    size = 1000 if quick else 10000
    reps = 20 if quick else 40
    per_process = 25 if quick else 100
    orders = list(items(size))
    results: dict[str, Any] = {"machine": machine(), "quick": quick, "items": size,
                               "targets": TARGETS, "others_before": others()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        query = folder / "station.dcm"
        identifier("station").save_as(query, implicit_vr=True, little_endian=True)
        (folder / "broker").mkdir()
        broker = BrokerUnderTest(folder / "broker", "logging.level=WARNING")
        populate(broker.db, orders)
        with broker:
            assert broker.proc is not None
            results["broker"] = worklist(broker.dicom_port, "MWLBROKER", query, reps,
                                         broker.proc.pid)
            print(f"broker: {results['broker']}", flush=True)
            results["mpps"] = mpps_stock(broker.dicom_port, broker.proc.pid, per_process)
            results["mpps"]["broker_warnings"] = sorted(set(
                line.split("event=")[1].split()[0] for line in broker.log_text().splitlines()
                if "level=WARNING" in line or "level=ERROR" in line))
            print(f"mpps: {results['mpps']}", flush=True)
        for label, cls in (("wlmscpfs", Wlmscpfs), ("orthanc", Orthanc)):
            if not cls.available():
                continue
            peer = cls(folder / label)
            write_files(orders, peer.items_folder)
            with peer:
                results[label] = worklist(peer.port, peer.ae_title, query,
                                          max(4, reps // 5), None)
            print(f"{label}: {results[label]}", flush=True)
    results["others_after"] = others()
    write_results("real_clients_quick" if quick else "real_clients", results, table(results))
    return 0


def table(r: dict[str, Any]) -> list[tuple[str, ...]]:
    b = r["broker"]
    rows: list[tuple[str, ...]] = [("figure", "broker", "wlmscpfs", "ratio", "orthanc",
                                    "ratio", "broker CPU", "target")]

    def row(label: str, value: Any, key: str, cpu: str, target: str) -> tuple[str, ...]:
        cells = [label, f"{value} ms"]
        for peer in ("wlmscpfs", "orthanc"):
            theirs = r.get(peer, {}).get(key)
            if isinstance(theirs, dict):
                theirs = theirs["p50_ms"]
            cells += [f"{theirs} ms" if theirs is not None else "-",
                      f"{theirs / value:.1f}×" if theirs else "-"]
        return (*cells, cpu, target)

    rows.append(row("findscu as shipped, 20 queries on one association (per query)",
                    b["findscu_20_on_one_association_ms"], "findscu_20_on_one_association_ms",
                    f"{b['findscu_cpu_ms_per_query']} ms/query", "≤ 10 ms, ≥ 50× wlmscpfs"))
    rows.append(row("findscu, one process per query", b["findscu_one_process_per_query_ms"],
                    "findscu_one_process_per_query_ms", "", ""))
    rows.append(row("stock pynetdicom 3.0.4, association kept open (p50)",
                    b["stock_pynetdicom_kept_open"]["p50_ms"], "stock_pynetdicom_kept_open",
                    f"{b['stock_pynetdicom_cpu_ms_per_query']} ms/query", "≥ 20× wlmscpfs"))
    if "stock_pynetdicom_quiet" in b:
        rows.append(row("the same with pynetdicom's LOG_RESPONSE_IDENTIFIERS = False (p50)",
                        b["stock_pynetdicom_quiet"]["p50_ms"], "stock_pynetdicom_quiet", "",
                        ""))
    m = r["mpps"]
    rows.append(("MPPS N-CREATE + N-SET, 8 stock pynetdicom SCU processes",
                 f"{m['pairs_per_s']} pairs/s ({m['pairs']}/{m['sent']})", "-", "", "-", "",
                 f"{m['broker_cpu_ms_per_pair']} ms/pair", "≥ 120 pairs/s, ≤ 1.5 ms/pair"))
    rows.append(("load average before / after", " / ".join(
        str(r[k]["loadavg"]) for k in ("others_before", "others_after")), "", "", "", "", "",
        ""))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 items, fewer repetitions")
    sys.exit(main(parser.parse_args().quick))
