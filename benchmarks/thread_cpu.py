"""Where the broker's CPU goes under benchmarks/load.py's loads: the broker process's
utime+stime over the load window, split by thread (names from ``py-spy dump``), per ORM.

    python benchmarks/thread_cpu.py mixed 10     # 100 MLLP connections + 64 C-FIND associations
    python benchmarks/thread_cpu.py hl7 8        # the MLLP senders only
    python benchmarks/thread_cpu.py cfind 8      # the C-FIND associations only
    python benchmarks/thread_cpu.py mixed 10 --spy out.txt   # and a py-spy raw profile (-t)
    python benchmarks/thread_cpu.py hl7 8 --postgres  # on a throwaway durable PostgreSQL
    python benchmarks/thread_cpu.py mixed 10 -o database.writer_poll_ms=0  # a setting changed

Prints one JSON line (nothing is written under results/). Throughput on a shared 2-core
machine is noisy; CPU per message is the steadier figure (benchmarks/results/
mixed_load_regression.md). Works from an older checkout too (copy it in): it uses only
benchmarks/load.py's senders and the tests' broker launcher.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import load
from benchmarks.common import PG_BENCH_SETTINGS, BrokerUnderTest
from benchmarks.mwl_query import populate
from benchmarks.worklist_data import items

TICK = os.sysconf("SC_CLK_TCK")
PY_SPY = Path(sys.executable).parent / "py-spy"


def _cpu_s(stat: str) -> float:
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def cpu(pid: int) -> tuple[float, dict[int, float]]:
    """The process's CPU seconds and each live thread's."""
    threads: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # a thread that just ended
            threads[int(tid)] = _cpu_s(f"/proc/{pid}/task/{tid}/stat")
    return _cpu_s(f"/proc/{pid}/stat"), threads


def switches(pid: int) -> dict[int, int]:
    """Each live thread's context switches so far (voluntary + involuntary): a thread that
    waits for the GIL (or a lock, or I/O) switches out."""
    counts: dict[int, int] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines()
            counts[int(tid)] = sum(int(line.split()[1]) for line in status
                                   if "ctxt_switches:" in line)
    return counts


def server_cpu(pids: list[int]) -> float:
    """CPU seconds of the PostgreSQL processes still alive."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += _cpu_s(f"/proc/{pid}/stat")
    return total


def thread_names(pid: int) -> dict[int, str]:
    """Thread id → Python thread name with its numbers dropped (Thread-12 → Thread)."""
    dump = subprocess.run([str(PY_SPY), "dump", "--pid", str(pid), "--nonblocking"],
                          capture_output=True, text=True).stdout
    names: dict[int, str] = {}
    for line in dump.splitlines():
        if line.startswith("Thread ") and '"' in line:
            names[int(line.split()[1], 0)] = re.sub(r"@\d+|-\d+", "", line.split('"')[1])
    return names


def measure(mode: str, seconds: float, spy: str | None, postgres: bool = False,
            extra: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"checkout": os.getcwd(), "mode": mode, "seconds": seconds,
                           "backend": "postgresql" if postgres else "sqlite"}
    samples: dict[str, tuple[float, dict[int, float]]] = {}
    names: dict[int, str] = {}
    switched: dict[str, dict[int, int]] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        options = ["logging.level=WARNING", *extra]
        cluster = None
        if postgres:
            if mode != "hl7":
                raise SystemExit("--postgres: hl7 mode only (the worklist is loaded into SQLite)")
            from tests.support.postgres import PostgresCluster
            cluster = stack.enter_context(PostgresCluster(PG_BENCH_SETTINGS, durable=True))
            options.append(f"database.url={cluster.create_database('thread_cpu')}")
        broker = BrokerUnderTest(Path(tmp), *options)
        if not postgres:
            populate(broker.db, list(items(load.WORKLIST)))
        with broker, multiprocessing.get_context("spawn").Pool(1) as pool:
            assert broker.proc is not None
            pid = broker.proc.pid
            start_at = time.time() + 2.0

            def sampler() -> None:
                time.sleep(max(0.0, start_at - time.time()))
                samples["start"] = cpu(pid)
                switched["start"] = switches(pid)
                if cluster is not None:
                    samples["server_start"] = (server_cpu(cluster.processes()), {})
                time.sleep(max(0.0, seconds - 1.0))
                names.update(thread_names(pid))
                time.sleep(max(0.0, start_at + seconds - time.time()))
                samples["end"] = cpu(pid)
                switched["end"] = switches(pid)
                if cluster is not None:
                    samples["server_end"] = (server_cpu(cluster.processes()), {})

            sampling = threading.Thread(target=sampler)
            sampling.start()
            spying = None
            if spy:
                spying = subprocess.Popen(
                    [str(PY_SPY), "record", "--pid", str(pid), "-d", str(int(seconds)),
                     "-r", "100", "-f", "raw", "-t", "--nonblocking", "-o", spy],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            finds = None
            if mode in ("mixed", "cfind"):
                finds = pool.apply_async(load._find_process,
                                         (broker.dicom_port, seconds, start_at))
            time.sleep(max(0.0, start_at - time.time()))
            if mode in ("mixed", "hl7"):
                out["hl7"] = asyncio.run(load.hl7_load(broker.port, seconds))
            if finds is not None:
                out["cfind"] = finds.get(seconds + 300)
            sampling.join()
            if spying is not None:
                spying.wait()
    (t0, th0), (t1, th1) = samples["start"], samples["end"]
    roles: dict[str, float] = {}
    for tid, end in th1.items():
        role = names.get(tid, "unnamed")
        roles[role] = roles.get(role, 0.0) + end - th0.get(tid, 0.0)
    moves: dict[str, int] = {}
    for tid, end_count in switched["end"].items():
        role = names.get(tid, "unnamed")
        moves[role] = moves.get(role, 0) + end_count - switched["start"].get(tid, 0)
    out["roles_context_switches"] = dict(sorted(moves.items(), key=lambda kv: -kv[1]))
    out["broker_cpu_s"] = round(t1 - t0, 3)
    out["roles_cpu_s"] = {k: round(v, 3) for k, v in sorted(roles.items(), key=lambda kv: -kv[1])}
    out["ended_threads_cpu_s"] = round(t1 - t0 - sum(roles.values()), 3)
    for key in ("hl7", "cfind"):
        if key in out:
            out[key].pop("error_examples", None)
    orms = out.get("hl7", {}).get("requests", 0)
    if orms:
        out["broker_ms_per_orm"] = round(1000 * (t1 - t0) / orms, 3)
    if orms and "server_end" in samples:
        out["postgres_ms_per_orm"] = round(
            1000 * (samples["server_end"][0] - samples["server_start"][0]) / orms, 3)
    if orms:
        out["ms_per_orm"] = {k: round(1000 * roles.get(k, 0.0) / orms, 3)
                             for k in ("MainThread", "store-writer")}
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("mixed", "hl7", "cfind"))
    parser.add_argument("seconds", type=float)
    parser.add_argument("--spy", help="also record a py-spy raw profile into this file")
    parser.add_argument("--postgres", action="store_true",
                        help="the broker on a throwaway durable PostgreSQL (hl7 mode)")
    parser.add_argument("-o", "--option", action="append", default=[],
                        help="a broker setting (key=value), e.g. database.writer_poll_ms=0")
    args = parser.parse_args()
    print(json.dumps(measure(args.mode, args.seconds, args.spy, args.postgres,
                             tuple(args.option))))
