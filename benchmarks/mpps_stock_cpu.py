"""The broker's CPU per MPPS pair under 8 stock pynetdicom SCU processes (real_clients.py's
MPPS load), split by thread, with context switches per pair: for before/after comparisons
of the N-service path (benchmarks/results/mpps_stock_before_after.md).

    python benchmarks/mpps_stock_cpu.py 300                  # 8 x 300 pairs
    python benchmarks/mpps_stock_cpu.py 300 --spy out.raw    # and a py-spy --gil profile
    python benchmarks/mpps_stock_cpu.py 300 --no-threads     # process CPU only (no sampling)

Prints one JSON line; nothing is written under results/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import BrokerUnderTest
from benchmarks.real_clients import mpps_stock
from benchmarks.thread_cpu import PY_SPY, cpu, switches, thread_names


def _kind(name: str) -> str:
    return name.split("@")[0].split("(")[0].strip() or "?"


def _per_pair(after: dict[int, float], before: dict[int, float], names: dict[int, str],
              pairs: int, scale: float) -> dict[str, float]:
    out: dict[str, float] = {}
    for tid, value in after.items():
        kind = _kind(names.get(tid, "?"))
        out[kind] = out.get(kind, 0.0) + (value - before.get(tid, 0)) * scale / pairs
    return {k: round(v, 3) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v > 0.005}


def measure(per_process: int, spy: str | None, by_thread: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "broker"
        folder.mkdir()
        broker = BrokerUnderTest(folder, "logging.level=WARNING")
        with broker:
            assert broker.proc is not None
            pid = broker.proc.pid
            names = thread_names(pid) if by_thread else {}
            profiler = subprocess.Popen(
                [str(PY_SPY), "record", "-r", "300", "-f", "raw", "-o", spy, "--threads",
                 "--nonblocking", "--gil", "-p", str(pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) if spy else None
            total0, threads0 = cpu(pid)
            last, counts0 = dict(threads0), switches(pid)
            counts = dict(counts0)
            stop = threading.Event()

            def sample() -> None:  # threads that end before the run does keep their figures
                while by_thread and not stop.is_set():
                    names.update(thread_names(pid))
                    last.update(cpu(pid)[1])
                    counts.update(switches(pid))
                    stop.wait(0.3)

            sampler = threading.Thread(target=sample)
            sampler.start()
            result = mpps_stock(broker.dicom_port, pid, per_process)
            stop.set()
            sampler.join()
            total1, threads1 = cpu(pid)
            last.update(threads1)
            if profiler is not None:
                profiler.send_signal(2)
                profiler.wait(60)
    pairs = max(1, int(result["pairs"]))
    out: dict[str, Any] = {"pairs": result["pairs"], "pairs_per_s": result["pairs_per_s"],
                           "answers_lost_by_the_scu": result["answers_lost_by_the_scu"],
                           "cpu_ms_per_pair": round((total1 - total0) * 1000 / pairs, 3)}
    if by_thread:
        out["thread_cpu_ms_per_pair"] = _per_pair(last, threads0, names, pairs, 1000)
        out["switches_per_pair"] = _per_pair(
            {k: float(v) for k, v in counts.items()},
            {k: float(v) for k, v in counts0.items()}, names, pairs, 1)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("per_process", type=int, nargs="?", default=300)
    parser.add_argument("--spy", help="write a py-spy --gil raw profile here")
    parser.add_argument("--no-threads", action="store_true",
                        help="process CPU only: no per-thread sampling during the run")
    args = parser.parse_args()
    print(json.dumps(measure(args.per_process, args.spy, not args.no_threads)))
