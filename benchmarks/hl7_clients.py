"""Issue 14's HL7 matrix: ORM^O01 ingest as senders the project did not write see it.

1. a plain asyncio MLLP client in a process of its own (nothing of the broker imported), each
   sender waiting for its ACK as a RIS does: 8 senders and 1 sender, then a steady 200/s;
2. python-hl7's ``mllp_send`` (unmodified), 8 processes and 1, each with a file of distinct
   ORMs (process start-up included in the time);
3. the project's own ``MllpClient`` (benchmarks/hl7_ingest.py's senders), beside them.

Beside each figure: the broker's CPU (utime + stime of its process from /proc) per message, and
the physical limits of this machine: the single-row durable commit rate of SQLite
(``synchronous=FULL``, WAL, in the folder the broker's database lives in) — the ceiling for one
sender, since each ACK waits for its own commit — and the CPU per message the 2 cores allow at
the target rate. Every message must be answered AA and be in the message log.

    python benchmarks/hl7_clients.py --quick    # fewer messages (CI)
    python benchmarks/hl7_clients.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sqlite3
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
from benchmarks.hl7_ingest import throughput
from tests.support.samples import order

TARGETS = {"eight_senders_per_s": 2500, "one_sender_per_s": 900, "steady_p99_ms": 25.0,
           "cpu_ms_per_orm": 0.4}
MLLP_SEND = Path(sys.executable).parent / "mllp_send"

PLAIN_CLIENT = textwrap.dedent("""
    import asyncio, json, sys, time
    port, path, senders, rate = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    messages = open(path, "rb").read().split(b"\\n")[:-1]
    share = [messages[k::senders] for k in range(senders)]
    latencies, failures = [], 0

    async def sender(batch, interval, start):
        global failures
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for n, message in enumerate(batch):
            if interval:
                await asyncio.sleep(max(0.0, start + n * interval - time.perf_counter()))
            t0 = time.perf_counter()
            writer.write(b"\\x0b" + message + b"\\x1c\\r")
            answer = await reader.readuntil(b"\\x1c\\r")
            latencies.append((time.perf_counter() - t0) * 1000)
            failures += b"MSA|AA|" not in answer
        writer.close()
        await writer.wait_closed()

    async def main():
        start = time.perf_counter()
        interval = senders / rate if rate else 0.0
        await asyncio.gather(*(sender(b, interval, start) for b in share))
        return time.perf_counter() - start

    cpu0 = time.process_time()
    seconds = asyncio.run(main())
    latencies.sort()
    pick = lambda p: latencies[min(len(latencies) - 1, round(p / 100 * (len(latencies) - 1)))]
    print(json.dumps({"messages": len(messages), "seconds": round(seconds, 3),
                      "per_s": round(len(messages) / seconds, 1), "failures": failures,
                      "p50_ms": round(pick(50), 2), "p99_ms": round(pick(99), 2),
                      "client_cpu_ms_per_msg": round(
                          (time.process_time() - cpu0) * 1000 / len(messages), 3)}))
""")


def message_file(folder: Path, first: int, count: int) -> Path:
    """``count`` distinct ORM^O01, one per line (segments joined by CR inside a line)."""
    path = folder / f"orm_{first}.hl7"
    path.write_bytes(b"".join(order(first + n).encode().rstrip(b"\r") + b"\n"
                              for n in range(count)))
    return path


def plain(port: int, pid: int, path: Path, senders: int, rate: float = 0.0) -> dict[str, Any]:
    cpu0 = cpu_seconds(pid)
    out = subprocess.run([sys.executable, "-c", PLAIN_CLIENT, str(port), str(path),
                          str(senders), str(rate)], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"plain asyncio client: {out.stderr[-500:]}")
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    result["broker_cpu_ms_per_msg"] = round(
        (cpu_seconds(pid) - cpu0) * 1000 / result["messages"], 3)
    return result


def mllp_send(port: int, pid: int, folder: Path, first: int, processes: int,
              per_process: int) -> dict[str, Any]:
    """``processes`` unmodified python-hl7 ``mllp_send`` runs at once."""
    files = [message_file(folder, first + k * per_process, per_process)
             for k in range(processes)]
    cpu0 = cpu_seconds(pid)
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    # each one's answers go to a file: a pipe read one process after the other would block
    # the others once their 64 KiB pipe buffer fills (and make them look slow)
    answers = [f.with_suffix(".acks") for f in files]
    outs = [a.open("wb") for a in answers]
    procs = [subprocess.Popen([str(MLLP_SEND), "--loose", "-f", str(f), "-p", str(port),
                               "127.0.0.1"], stdout=out, stderr=subprocess.STDOUT)
             for f, out in zip(files, outs, strict=True)]
    for p in procs:
        p.wait(timeout=600)
    seconds = time.perf_counter() - started
    broker_cpu = cpu_seconds(pid) - cpu0
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    for out in outs:
        out.close()
    messages = processes * per_process
    aa = sum(a.read_bytes().count(b"MSA|AA|") for a in answers)
    return {"processes": processes, "messages": messages, "seconds": round(seconds, 3),
            "per_s": round(messages / seconds, 1),
            "failures": messages - aa + sum(1 for p in procs if p.returncode),
            "broker_cpu_ms_per_msg": round(broker_cpu * 1000 / messages, 3),
            "client_cpu_ms_per_msg": round(
                (children1.ru_utime + children1.ru_stime - children0.ru_utime
                 - children0.ru_stime) * 1000 / messages, 3)}


def own_client(port: int, pid: int, senders: int, per_sender: int, first: int
               ) -> dict[str, Any]:
    cpu0 = cpu_seconds(pid)
    result: dict[str, Any] = asyncio.run(throughput(port, senders, per_sender, first))
    result["broker_cpu_ms_per_msg"] = round(
        (cpu_seconds(pid) - cpu0) * 1000 / result["messages"], 3)
    return result


def commit_rate(folder: Path, seconds: float) -> float:
    """Single-row durable commits/s (WAL, synchronous=FULL) in ``folder``."""
    conn = sqlite3.connect(folder / "commit_rate.sqlite", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds and n < 100_000:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (v) VALUES (?)", ("x" * 200,))
        conn.execute("COMMIT")
        n += 1
    rate = n / (time.perf_counter() - start)
    conn.close()
    return round(rate, 1)


def logged(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM message_log").fetchone()[0])
    finally:
        conn.close()


def main(quick: bool) -> int:
    eight = 2000 if quick else 8000  # messages in the 8-sender runs
    one = 500 if quick else 2000
    results: dict[str, Any] = {"machine": machine(), "quick": quick, "targets": TARGETS,
                               "others_before": others()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results["limit_single_row_commits_per_s"] = commit_rate(folder, 2.0 if quick else 5.0)
        (folder / "broker").mkdir()
        with BrokerUnderTest(folder / "broker", "logging.level=WARNING") as broker:
            assert broker.proc is not None
            pid, port = broker.proc.pid, broker.port
            plain(port, pid, message_file(folder, 9_000_000, 400), 8)  # warm-up
            sent = 400
            runs: dict[str, Any] = {}
            runs["plain_8"] = plain(port, pid, message_file(folder, 1_000_000, eight), 8)
            runs["plain_1"] = plain(port, pid, message_file(folder, 2_000_000, one), 1)
            steady_n = 1000 if quick else 4000
            runs["plain_steady_200"] = plain(port, pid, message_file(folder, 3_000_000,
                                                                     steady_n), 8, 200.0)
            runs["mllp_send_8"] = mllp_send(port, pid, folder, 4_000_000, 8, eight // 8)
            runs["mllp_send_1"] = mllp_send(port, pid, folder, 5_000_000, 1, one)
            runs["own_8"] = own_client(port, pid, 8, eight // 8, 6_000_000)
            runs["own_1"] = own_client(port, pid, 1, one, 7_000_000)
            sent += 2 * eight + eight - eight % 8 + 3 * one + steady_n
            results["runs"] = runs
            results["broker_rss_peak_mb"] = round(int(next(
                line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmHWM:"))) / 1024, 1)
            db = broker.db
            results["sent"] = sent
        results["in_message_log"] = logged(db)
    results["others_after"] = others()
    write_results("hl7_clients_quick" if quick else "hl7_clients", results, table(results))
    failures = sum(r["failures"] for r in results["runs"].values())
    return 0 if failures == 0 and results["in_message_log"] >= results["sent"] else 1


def table(r: dict[str, Any]) -> list[tuple[str, ...]]:
    runs = r["runs"]
    limit = r["limit_single_row_commits_per_s"]
    rows: list[tuple[str, ...]] = [("client", "messages/s", "ACK p50 / p99 ms",
                                    "broker CPU ms/msg", "client CPU ms/msg", "target")]
    labels = {"plain_8": "plain asyncio client, 8 senders",
              "plain_1": "plain asyncio client, 1 sender",
              "plain_steady_200": "plain asyncio client, steady 200/s",
              "mllp_send_8": "python-hl7 mllp_send, 8 processes",
              "mllp_send_1": "python-hl7 mllp_send, 1 process",
              "own_8": "project MllpClient, 8 senders", "own_1": "project MllpClient, 1 sender"}
    targets = {"plain_8": f"≥ {TARGETS['eight_senders_per_s']}/s, ≤ 0.4 ms/msg",
               "plain_1": f"≥ {TARGETS['one_sender_per_s']}/s (limit {limit} commits/s)",
               "plain_steady_200": f"p99 ≤ {TARGETS['steady_p99_ms']} ms"}
    for key, label in labels.items():
        run = runs[key]
        lat = (f"{run['p50_ms']} / {run['p99_ms']}" if "p50_ms" in run else "")
        rows.append((label, str(run["per_s"]), lat, str(run["broker_cpu_ms_per_msg"]),
                     str(run.get("client_cpu_ms_per_msg", "")), targets.get(key, "")))
    rows.append(("limit: single-row durable commits/s (one sender's ceiling)", str(limit), "",
                 "", "", ""))
    rows.append(("limit: CPU per message 2 cores allow at 2,500/s (broker + client)", "",
                 "", "0.8", "", ""))
    rows.append(("durable: in the message log / sent", f"{r['in_message_log']} / {r['sent']}",
                 "", "", "", "all"))
    rows.append(("broker peak RSS MB", str(r["broker_rss_peak_mb"]), "", "", "", ""))
    rows.append(("load average before / after", " / ".join(
        str(r[k]["loadavg"]) for k in ("others_before", "others_after")), "", "", "", ""))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer messages (CI)")
    sys.exit(main(parser.parse_args().quick))
