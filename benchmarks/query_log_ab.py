"""What recording every C-FIND in the query log costs: the same broker, the same items and the
same unmodified clients, with ``dicom.query_log`` on and off, alternating rounds.

Clients as in benchmarks/real_clients.py: DCMTK ``findscu`` as shipped, 20 query files on
one association (station CT01 + today, 36 matches), and a stock pynetdicom 3.0.4 SCU with its
association kept open. Broker CPU (utime + stime from /proc) per query beside each figure;
after each "on" round the rows in the query log are counted (every query recorded).

    python benchmarks/query_log_ab.py --quick   # 1,000 items, 2 rounds
    python benchmarks/query_log_ab.py           # 10,000 items, 3 rounds
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import BrokerUnderTest, machine, write_results
from benchmarks.ha_soak import cpu_seconds, others
from benchmarks.mwl_query import identifier, populate
from benchmarks.real_clients import findscu, stock_find
from benchmarks.worklist_data import items


def one_round(folder: Path, db: Path, query: Path, on: bool, runs: int, reps: int
              ) -> dict[str, Any]:
    work = folder / ("on" if on else "off")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    broker = BrokerUnderTest(work, "logging.level=WARNING",
                             f"dicom.query_log={'true' if on else 'false'}")
    shutil.copy(db, broker.db)
    out: dict[str, Any] = {"query_log": on}
    with broker:
        assert broker.proc is not None
        pid = broker.proc.pid
        findscu(broker.dicom_port, "MWLBROKER", query, 2)  # warm-up
        cpu0 = cpu_seconds(pid)
        times = [findscu(broker.dicom_port, "MWLBROKER", query, 20) / 20 for _ in range(runs)]
        out["findscu_20_on_one_association_ms"] = round(statistics.median(times), 3)
        out["findscu_cpu_ms_per_query"] = round(
            (cpu_seconds(pid) - cpu0) * 1000 / (20 * runs), 3)
        cpu0 = cpu_seconds(pid)
        stock = stock_find(broker.dicom_port, "MWLBROKER", query, reps)
        out["stock_pynetdicom_p50_ms"] = stock["p50_ms"]
        out["stock_pynetdicom_cpu_ms_per_query"] = round(
            (cpu_seconds(pid) - cpu0) * 1000 / (reps + 1), 3)
        time.sleep(1.5)  # one batch interval: what is buffered is stored
        expected = 2 + 20 * runs + reps + 1
        with sqlite3.connect(broker.db) as conn:
            logged = conn.execute("SELECT COUNT(*) FROM query_log").fetchone()[0]
        out["queries_sent"] = expected
        out["queries_logged"] = int(logged)
    return out


def main(quick: bool) -> int:
    size = 1000 if quick else 10000
    rounds = 2 if quick else 3
    runs, reps = (3, 20) if quick else (15, 200)
    results: dict[str, Any] = {"machine": machine(), "quick": quick, "items": size,
                               "others_before": others(), "rounds": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        query = folder / "station.dcm"
        identifier("station").save_as(query, implicit_vr=True, little_endian=True)
        (folder / "seed").mkdir()
        seed = BrokerUnderTest(folder / "seed")
        populate(seed.db, list(items(size)))
        for n in range(rounds):
            for on in ((True, False) if n % 2 == 0 else (False, True)):
                r = one_round(folder, Path(seed.db), query, on, runs, reps)
                r["round"] = n + 1
                print(r, flush=True)
                results["rounds"].append(r)
    results["others_after"] = others()
    for on in (True, False):
        rows = [r for r in results["rounds"] if r["query_log"] == on]
        results["on" if on else "off"] = {
            k: round(statistics.median(r[k] for r in rows), 3)
            for k in ("findscu_20_on_one_association_ms", "findscu_cpu_ms_per_query",
                      "stock_pynetdicom_p50_ms", "stock_pynetdicom_cpu_ms_per_query")}
    write_results("query_log_ab_quick" if quick else "query_log_ab", results, table(results))
    return 0


def table(r: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("figure", "query log on", "query log off", "on / off")]
    for key, label in (("findscu_20_on_one_association_ms", "findscu, 20 on one association"
                        " (ms per query)"),
                       ("findscu_cpu_ms_per_query", "broker CPU per findscu query (ms)"),
                       ("stock_pynetdicom_p50_ms", "stock pynetdicom kept open, p50 (ms)"),
                       ("stock_pynetdicom_cpu_ms_per_query",
                        "broker CPU per stock pynetdicom query (ms)")):
        on, off = r["on"][key], r["off"][key]
        rows.append((label, str(on), str(off), f"{on / off:.3f}" if off else "-"))
    logged = [f"{x['queries_logged']}/{x['queries_sent']}" for x in r["rounds"]
              if x["query_log"]]
    rows.append(("queries in the log / sent (each 'on' round)", ", ".join(logged), "", ""))
    rows.append(("load average before / after", str(r["others_before"]["loadavg"]),
                 str(r["others_after"]["loadavg"]), ""))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    sys.exit(main(parser.parse_args().quick))
