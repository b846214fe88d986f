"""Issue 13's figures, SQLite and PostgreSQL side by side in one run: one broker on each
(PostgreSQL: a durable cluster, fsync on), the same 100,000 scheduled steps stored in both
(benchmarks/worklist_data.py's ``items`` through benchmarks/mwl_query.py's ``populate``: the
store's own writer, 2,000 orders per transaction; PostgreSQL then ``VACUUM ANALYZE``d, as its
autovacuum would do within a minute or so).

1. Station C-FIND (CT01 today, 36 matches) p50 / p99: DCMTK ``findscu`` (one process and one
   association per query, as mwl_query.py's "with findscu" rows), then one association kept
   open by a stock pynetdicom 3.0.4 SCU in a process of its own (no broker code patches it),
   and by the same SCU with the broker's pynetdicom patches applied in its process (what
   mwl_query.py's "kept association" rows measure). The ratio PostgreSQL / SQLite of the
   p50s (issue 13: PostgreSQL within 2× of SQLite).
2. MPPS N-CREATE + N-SET COMPLETED pairs/s from 8 modalities, with benchmarks/mpps.py's lean
   in-process clients and its pynetdicom SCU processes (mpps.py applies the broker's
   pynetdicom patches in each: stock SCUs lose a response now and then, see
   docs/pynetdicom-requestor-race.md); the RIS destination is up as in mpps.py.
3. Broker CPU (utime + stime from /proc) per query and per pair, PostgreSQL's CPU (the
   postmaster and its children), and what else ran (load average, busiest processes).

    python benchmarks/ha_figures.py --quick   # 10,000 steps, fewer queries and pairs
    python benchmarks/ha_figures.py           # 100,000 steps
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pynetdicom.dul

from benchmarks.common import (
    PG_BENCH_SETTINGS,
    BrokerUnderTest,
    free_port,
    machine,
    percentile,
    write_results,
)
from benchmarks.ha_soak import (
    MPPS_FIRST,
    cpu_seconds,
    new_database,
    others,
    pg_broker,
    pg_cpu_seconds,
)
from benchmarks.mpps import (
    MODALITIES,
    RisThread,
    _modality_process,
    _warm,
    feed_range,
    study,
    wire_modalities,
    wire_requests,
)
from benchmarks.mwl_query import findscu_times, identifier, populate
from benchmarks.worklist_data import TODAY_MATCHES, items
from broker.dicom import pynetdicom_patches
from broker.dicom.client import QueryFailed, WorklistClient
from broker.dicom.pynetdicom_patches import fixes
from tests.support.postgres import PostgresCluster

TARGETS = {"pg_over_sqlite_station_p50": 2.0}
#: the broker's options on both backends (per-address caps are off: BrokerUnderTest)
OPTIONS = ("logging.level=WARNING",)


@dataclass(frozen=True)
class Plan:
    steps: int
    findscu_queries: int
    kept_queries: int
    lean_pairs_per_modality: int
    scu_pairs_per_modality: int
    phase_seconds: float  # the bound of each timed loop


QUICK = Plan(steps=10_000, findscu_queries=10, kept_queries=30, lean_pairs_per_modality=40,
             scu_pairs_per_modality=10, phase_seconds=60.0)
FULL = Plan(steps=100_000, findscu_queries=50, kept_queries=200, lean_pairs_per_modality=250,
            scu_pairs_per_modality=250, phase_seconds=300.0)


@dataclass
class Backend:
    """A running broker and what its CPU is read from."""

    name: str
    broker: BrokerUnderTest
    pg: PostgresCluster | None
    folder: Path  # findscu's query file goes there
    first: int  # the first order number of its MPPS pairs

    @property
    def pid(self) -> int | None:
        return self.broker.proc.pid if self.broker.proc else None

    def cpu(self) -> tuple[float, float]:
        return cpu_seconds(self.pid), pg_cpu_seconds(self.pg) if self.pg else 0.0


def with_cpu(figures: dict[str, Any], backend: Backend, before: tuple[float, float],
             count: int, unit: str) -> dict[str, Any]:
    """``figures`` with the broker's (and PostgreSQL's) CPU since ``before`` per ``unit``."""
    broker_cpu, pg_cpu = (b - a for a, b in zip(before, backend.cpu(), strict=True))
    figures["broker_cpu_s"] = round(broker_cpu, 3)
    figures[f"broker_cpu_ms_per_{unit}"] = round(broker_cpu / count * 1000, 3) if count else None
    if backend.pg is not None:
        figures["postgres_cpu_s"] = round(pg_cpu, 3)
        figures[f"postgres_cpu_ms_per_{unit}"] = (round(pg_cpu / count * 1000, 3) if count
                                                  else None)
    return figures


def summary(times: list[float]) -> dict[str, Any]:
    return {"p50_ms": round(statistics.median(times), 2) if times else None,
            "p99_ms": round(percentile(times, 99), 2) if times else None, "n": len(times)}


# -- C-FIND ----------------------------------------------------------------------------------

def findscu_station(backend: Backend, folder: Path, reps: int, seconds: float
                    ) -> dict[str, Any]:
    """mwl_query.py's findscu measurement, one query per call so that the loop is bounded in
    time as well; broker CPU per query (each one a whole association)."""
    times: list[float] = []
    before = backend.cpu()
    deadline = time.monotonic() + seconds
    while len(times) < reps and time.monotonic() < deadline:
        times.append(findscu_times(backend.broker.dicom_port, "MWLBROKER", folder, 1)["p50_ms"])
    return with_cpu(summary(times), backend, before, len(times), "query")


def kept_association(port: int, reps: int, seconds: float, patched: bool) -> dict[str, Any]:
    """Station queries on one association kept open, run in a fresh (spawned) process: a
    stock pynetdicom SCU, or with ``patched`` the broker's pynetdicom patches applied first
    (as mwl_query.py's SCU). A wrong answer (a lost response: stock pynetdicom's requestor
    race) is counted and the association opened anew."""
    if patched:
        pynetdicom_patches.apply(fast_path=True)
    query = identifier("station")
    times: list[float] = []
    wrong: list[str] = []
    deadline = time.monotonic() + seconds
    client = WorklistClient("127.0.0.1", port, timeout=10)
    try:
        client.find(query)  # warm-up (opens the association)
        while len(times) + len(wrong) < reps and time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                result = client.find(query)
            except QueryFailed as exc:
                wrong.append(repr(exc))
                client.close()
                continue
            elapsed = (time.perf_counter() - t0) * 1000
            if result.status != 0 or len(result.matches) != TODAY_MATCHES:
                wrong.append(f"{len(result.matches)} matches, status {result.status:#06x}")
                client.close()  # out of step: the next find opens a new association
                continue
            times.append(elapsed)
    finally:
        client.close()
    stock = pynetdicom.dul.DULServiceProvider.run_reactor is fixes._stock_run_reactor
    return {**summary(times), "wrong_answers": len(wrong), "wrong_examples": wrong[:3],
            "queries_incl_warm_up": len(times) + len(wrong) + 1, "stock_reactor": stock}


def kept_station(backend: Backend, reps: int, seconds: float, patched: bool) -> dict[str, Any]:
    """``kept_association`` in a spawned process; CPU per query over every query it sent
    (the warm-up and the association's setup included)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pool.apply(os.getpid)  # the process is up and has imported this module
        before = backend.cpu()
        figures: dict[str, Any] = pool.apply_async(
            kept_association, (backend.broker.dicom_port, reps, seconds, patched)
        ).get(seconds + 60)
    return with_cpu(figures, backend, before, figures["queries_incl_warm_up"], "query")


def cfind(backends: list[Backend], plan: Plan) -> dict[str, dict[str, Any]]:
    """The three station-query figures, each taken on one backend after the other (so that
    a change of the machine's other load falls on both alike)."""
    out: dict[str, dict[str, Any]] = {b.name: {} for b in backends}
    for name in ("findscu", "kept_stock_pynetdicom", "kept_patched_pynetdicom"):
        for b in backends:
            if name == "findscu":
                figures = findscu_station(b, b.folder, plan.findscu_queries, plan.phase_seconds)
            else:
                figures = kept_station(b, plan.kept_queries, plan.phase_seconds,
                                       patched=name == "kept_patched_pynetdicom")
            out[b.name][name] = figures
            print(f"{b.name} C-FIND {name}: {figures}", flush=True)
    return out


# -- MPPS ------------------------------------------------------------------------------------

def lean_pairs(backend: Backend, first: int, per_modality: int, seconds: float
               ) -> dict[str, Any]:
    """mpps.py's 8 lean modalities (one asyncio process, messages pre-encoded)."""
    parts = [wire_requests(range(first + k * per_modality, first + (k + 1) * per_modality))
             for k in range(MODALITIES)]
    errors: list[str] = []
    before = backend.cpu()

    async def bounded() -> float:
        return await asyncio.wait_for(
            wire_modalities(backend.broker.dicom_port, parts, errors), seconds)

    elapsed = asyncio.run(bounded())
    pairs = MODALITIES * per_modality
    figures = {"modalities": MODALITIES, "pairs": pairs, "seconds": round(elapsed, 2),
               "per_s": round(pairs / elapsed, 1), "errors": len(errors),
               "error_examples": errors[:3],
               "client": "mpps.py wire_modalities: 8 associations, one asyncio process"}
    return with_cpu(figures, backend, before, pairs, "pair")


def scu_pairs(backend: Backend, first: int, per_modality: int, seconds: float
              ) -> dict[str, Any]:
    """mpps.py's pynetdicom SCU processes, one per modality (``_warm`` applies the broker's
    pynetdicom patches in each, as mpps.py does)."""
    port = backend.broker.dicom_port
    jobs = [(port, range(first + k * per_modality, first + (k + 1) * per_modality))
            for k in range(MODALITIES)]
    errors: list[str] = []
    with multiprocessing.get_context("spawn").Pool(MODALITIES, initializer=_warm) as pool:
        # most workers are up (and warm) before the clock starts
        pool.map(time.sleep, [0.3] * MODALITIES, chunksize=1)
        before = backend.cpu()
        started = time.perf_counter()
        for _sent, part_errors in pool.starmap_async(_modality_process, jobs).get(seconds):
            errors += part_errors
        elapsed = time.perf_counter() - started
    pairs = MODALITIES * per_modality
    figures = {"modalities": MODALITIES, "pairs": pairs, "seconds": round(elapsed, 2),
               "per_s": round(pairs / elapsed, 1), "errors": len(errors),
               "error_examples": errors[:3],
               "client": "mpps.py _modality_process: a pynetdicom SCU process per modality "
                         "(broker's pynetdicom patches applied in each)"}
    return with_cpu(figures, backend, before, pairs, "pair")


def mpps(backends: list[Backend], ris: RisThread, plan: Plan) -> dict[str, dict[str, Any]]:
    """Both MPPS figures, each on one backend after the other; each backend's pairs on orders
    of its own (``Backend.first``…: not among the worklist's items, nor the other backend's,
    whose status messages reach the same RIS)."""
    lean_total = MODALITIES * plan.lean_pairs_per_modality
    scu_total = MODALITIES * plan.scu_pairs_per_modality
    for b in backends:  # the orders the MPPS refer to, in before the clock starts (mpps.py)
        asyncio.run(asyncio.wait_for(
            feed_range(b.broker.port, range(b.first, b.first + lean_total + scu_total)),
            plan.phase_seconds))
    out: dict[str, dict[str, Any]] = {b.name: {} for b in backends}
    for b in backends:
        out[b.name]["lean"] = lean_pairs(b, b.first, plan.lean_pairs_per_modality,
                                         plan.phase_seconds)
        print(f"{b.name} MPPS lean: {out[b.name]['lean']}", flush=True)
    for b in backends:
        out[b.name]["pynetdicom_processes"] = scu_pairs(
            b, b.first + lean_total, plan.scu_pairs_per_modality, plan.phase_seconds)
        print(f"{b.name} MPPS pynetdicom: {out[b.name]['pynetdicom_processes']}", flush=True)
    # the status messages at the RIS (a sanity check: every COMPLETED reached it)
    deadline = time.monotonic() + 60
    for b in backends:
        studies = {study(n) for n in range(b.first, b.first + lean_total + scu_total)}
        while not studies <= set(ris.arrived) and time.monotonic() < deadline:
            time.sleep(0.1)
        out[b.name]["ris_completed_messages"] = len(studies & set(ris.arrived))
        out[b.name]["pairs_sent"] = len(studies)
    return out


# -- the run ---------------------------------------------------------------------------------

@contextlib.contextmanager
def without_database_url() -> Iterator[None]:
    """The SQLite broker: its own file, whatever MWL_DATABASE_URL says (ha_soak.py)."""
    saved = os.environ.pop("MWL_DATABASE_URL", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["MWL_DATABASE_URL"] = saved


def run(plan: Plan, tmp: Path, pg: PostgresCluster, ris: RisThread) -> dict[str, Any]:
    """Both brokers populated, then up together, each figure taken on one after the other."""
    orders = list(items(plan.steps))
    destination = (f"outbound.destinations=[{{name: ris, host: 127.0.0.1, port: {ris.port},"
                   " timeout: 5}]")
    out: dict[str, Any] = {"sqlite": {}, "postgres": {}}
    with without_database_url():  # read by the constructor
        (tmp / "sqlite").mkdir()
        lite = BrokerUnderTest(tmp / "sqlite", *OPTIONS, destination)
    out["sqlite"]["populate_s"] = round(populate(lite.db, orders), 1)
    url = new_database(pg, "figures")
    out["postgres"]["populate_s"] = round(populate(url, orders), 1)
    started = time.perf_counter()
    pg.psql("VACUUM ANALYZE", "figures")
    out["postgres"]["vacuum_analyze_s"] = round(time.perf_counter() - started, 1)
    print(f"populated {plan.steps} steps: {out}", flush=True)
    with lite, pg_broker(tmp / "pg", url, "a", *OPTIONS, destination) as pgb:
        backends = [Backend("sqlite", lite, None, tmp / "sqlite", MPPS_FIRST),
                    Backend("postgres", pgb, pg, tmp / "pg" / "a", MPPS_FIRST + 500_000)]
        out["others_before"] = others()
        for name, figures in cfind(backends, plan).items():
            out[name]["cfind"] = figures
        out["others_after_cfind"] = others()
        for name, figures in mpps(backends, ris, plan).items():
            out[name]["mpps"] = figures
        out["others_after_mpps"] = others()
        for b in backends:
            out[b.name]["broker_error_lines"] = [
                line[:300] for line in b.broker.log_text().splitlines()
                if "level=ERROR" in line or "Traceback" in line][:5]
    return out


def ratio(a: float | None, b: float | None) -> str:
    return f"{b / a:.2f}×" if a and b else "-"


def table(figures: dict[str, Any], plan: Plan) -> list[tuple[str, ...]]:
    s, p = figures["sqlite"], figures["postgres"]
    rows: list[tuple[str, ...]] = [("figure", "SQLite", "PostgreSQL", "PG / SQLite", "target")]
    rows.append((f"populate {plan.steps:,} steps (s)", f"{s['populate_s']}",
                 f"{p['populate_s']} (+ VACUUM ANALYZE {p['vacuum_analyze_s']})", "", ""))
    labels = {"findscu": "DCMTK findscu, one association per query",
              "kept_stock_pynetdicom": "stock pynetdicom SCU, kept association",
              "kept_patched_pynetdicom": "pynetdicom SCU with the broker's patches, kept "
                                         "association (as mwl_query.py)"}
    for key, label in labels.items():
        a, b = s["cfind"][key], p["cfind"][key]
        rows.append((f"station C-FIND at {plan.steps:,} steps, {label}: p50 / p99 ms "
                     f"(n {a['n']} / {b['n']})",
                     f"{a['p50_ms']} / {a['p99_ms']}", f"{b['p50_ms']} / {b['p99_ms']}",
                     f"p50 {ratio(a['p50_ms'], b['p50_ms'])}",
                     f"≤ {TARGETS['pg_over_sqlite_station_p50']:.0f}×"))
        rows.append((f"  broker CPU ms/query ({label.split(',')[0]}); PostgreSQL's",
                     f"{a['broker_cpu_ms_per_query']}",
                     f"{b['broker_cpu_ms_per_query']}; PG {b['postgres_cpu_ms_per_query']}",
                     ratio(a["broker_cpu_ms_per_query"], b["broker_cpu_ms_per_query"]), ""))
    for key in ("kept_stock_pynetdicom", "kept_patched_pynetdicom"):
        wrong = (s["cfind"][key]["wrong_answers"], p["cfind"][key]["wrong_answers"])
        if any(wrong):
            rows.append((f"  wrong answers ({key})", f"{wrong[0]}", f"{wrong[1]}", "", "0"))
    labels = {"lean": "lean clients, one process (mpps.py)",
              "pynetdicom_processes": "a pynetdicom SCU process each (mpps.py, patched)"}
    for key, label in labels.items():
        a, b = s["mpps"][key], p["mpps"][key]
        rows.append((f"MPPS N-CREATE + N-SET pairs/s, {MODALITIES} modalities, {label} "
                     f"({a['pairs']} pairs)", f"{a['per_s']}", f"{b['per_s']}",
                     ratio(a["per_s"], b["per_s"]), ""))
        rows.append(("  broker CPU ms/pair; PostgreSQL's", f"{a['broker_cpu_ms_per_pair']}",
                     f"{b['broker_cpu_ms_per_pair']}; PG {b['postgres_cpu_ms_per_pair']}",
                     ratio(a["broker_cpu_ms_per_pair"], b["broker_cpu_ms_per_pair"]), ""))
        rows.append(("  errors", f"{a['errors']}", f"{b['errors']}", "", "0"))
    rows.append(("COMPLETED status messages at the RIS / pairs",
                 f"{s['mpps']['ris_completed_messages']} / {s['mpps']['pairs_sent']}",
                 f"{p['mpps']['ris_completed_messages']} / {p['mpps']['pairs_sent']}", "",
                 "all"))
    rows.append(("load average (1/5/15 min) before / after C-FIND / after MPPS (both "
                 "brokers up)", " / ".join(" ".join(figures[k]["loadavg"]) for k in (
                     "others_before", "others_after_cfind", "others_after_mpps")), "", "", ""))
    return rows


def ok(figures: dict[str, Any]) -> bool:
    for backend in (figures["sqlite"], figures["postgres"]):
        if any(backend["cfind"][k]["wrong_answers"] for k in ("kept_stock_pynetdicom",
                                                               "kept_patched_pynetdicom")):
            return False
        m = backend["mpps"]
        if m["lean"]["errors"] or m["pynetdicom_processes"]["errors"] or \
                m["ris_completed_messages"] != m["pairs_sent"] or backend["broker_error_lines"]:
            return False
    return True


def main(quick: bool) -> int:
    plan = QUICK if quick else FULL
    command = " ".join([Path(sys.executable).name, *sys.argv])
    results: dict[str, Any] = {"machine": machine(), "quick": quick, "command": command,
                               "plan": plan.__dict__, "targets": TARGETS,
                               "broker_options": list(OPTIONS), "others_at_start": others()}
    with tempfile.TemporaryDirectory() as tmp_name, \
            PostgresCluster(PG_BENCH_SETTINGS, durable=True) as pg, \
            RisThread(free_port()) as ris:
        server = {key: pg.psql(f"SHOW {key}")[0][0]
                  for key in ("server_version", "fsync", "synchronous_commit")}
        results["postgres_server"] = server
        figures = run(plan, Path(tmp_name), pg, ris)
    results.update(figures)
    results["others_at_end"] = others()
    s, p = figures["sqlite"]["cfind"], figures["postgres"]["cfind"]
    results["pg_over_sqlite_station_p50"] = {
        key: round(p[key]["p50_ms"] / s[key]["p50_ms"], 2) if s[key]["p50_ms"] and
        p[key]["p50_ms"] else None for key in s}
    name = "ha_figures_quick" if quick else "ha_figures"
    write_results(name, results, table(figures, plan))
    md = Path(__file__).resolve().parent / "results" / f"{name}.md"
    load = (results["others_at_start"]["loadavg"], results["others_at_end"]["loadavg"])
    md.write_text(
        md.read_text() + f"\nCommand: `{command}`\n\nBroker options on both: "
        f"{', '.join(OPTIONS)} (per-address caps off), a RIS destination up. PostgreSQL "
        f"{server['server_version']}, fsync {server['fsync']}, synchronous_commit "
        f"{server['synchronous_commit']}.\n\nLoad average at the start / end of the run: "
        f"{load[0]} / {load[1]}; busiest processes after the C-FIND phases:\n\n```\n"
        + "\n".join(figures["others_after_cfind"]["top_processes"]) + "\n```\n")
    return 0 if ok(figures) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="10,000 steps, fewer queries and pairs (results: ha_figures_quick)")
    sys.exit(main(parser.parse_args().quick))
