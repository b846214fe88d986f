"""HL7 ingest: ORM^O01 with distinct orders into the real broker, each sender waiting for its
ACK as a RIS does. Throughput with 1 and 8 senders, ACK latency at a steady 200 messages/s,
and the parser on the hot path (broker parser vs python-hl7 vs hl7apy).

    python benchmarks/hl7_ingest.py            # full run, writes benchmarks/results/
    python benchmarks/hl7_ingest.py --quick    # bounded short run (CI)
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import BrokerUnderTest, machine, percentile, write_results
from broker.hl7.mllp import MllpClient
from tests.support.samples import order

TARGETS = {"one_sender_per_s": 700, "eight_senders_per_s": 2000, "steady_p99_ms": 25.0}


async def sender(port: int, numbers: range, latencies: list[float]) -> int:
    failures = 0
    queue = [order(n).encode() for n in numbers]  # a RIS has its messages ready to go
    async with MllpClient("127.0.0.1", port, timeout=30) as client:
        for payload in queue:
            t0 = time.perf_counter()
            answer = await client.send(payload)
            latencies.append((time.perf_counter() - t0) * 1000)
            if b"MSA|AA|" not in answer:
                failures += 1
    return failures


async def throughput(port: int, senders: int, per_sender: int, first: int) -> dict[str, Any]:
    latencies: list[float] = []
    t0 = time.perf_counter()
    failures = await asyncio.gather(*(
        sender(port, range(first + i * per_sender, first + (i + 1) * per_sender), latencies)
        for i in range(senders)))
    elapsed = time.perf_counter() - t0
    total = senders * per_sender
    return {"senders": senders, "messages": total, "seconds": round(elapsed, 3),
            "per_s": round(total / elapsed, 1), "p50_ms": round(percentile(latencies, 50), 2),
            "p99_ms": round(percentile(latencies, 99), 2), "failures": sum(failures)}


async def steady(port: int, rate: float, seconds: float, first: int) -> dict[str, Any]:
    """Messages at a fixed rate on one connection (a RIS draining its queue at 200/s)."""
    latencies: list[float] = []
    count = int(rate * seconds)
    interval = 1.0 / rate
    failures = 0
    async with MllpClient("127.0.0.1", port, timeout=30) as client:
        start = time.perf_counter()
        for i in range(count):
            due = start + i * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            t0 = time.perf_counter()
            answer = await client.send(order(first + i).encode())
            latencies.append((time.perf_counter() - t0) * 1000)
            failures += b"MSA|AA|" not in answer
        elapsed = time.perf_counter() - start
    return {"rate": rate, "messages": count, "achieved_per_s": round(count / elapsed, 1),
            "p50_ms": round(percentile(latencies, 50), 2),
            "p99_ms": round(percentile(latencies, 99), 2),
            "max_ms": round(max(latencies), 2), "failures": failures}


def parser_costs(repeat: int) -> dict[str, float]:
    from broker.hl7.message import parse

    text = order(1).text()
    out: dict[str, float] = {}

    def measure(name: str, fn: Any, n: int) -> None:
        fn()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        out[name] = round((time.perf_counter() - t0) / n * 1e6, 1)

    measure("broker_parser_us", lambda: parse(text), repeat)
    try:
        import hl7

        measure("python_hl7_us", lambda: hl7.parse(text), max(1, repeat // 10))
    except ImportError:
        pass
    try:
        from hl7apy.parser import parse_message

        measure("hl7apy_us", lambda: parse_message(text, find_groups=True),
                max(1, repeat // 100))
    except ImportError:
        pass
    return out


def durable_count(db: Path) -> tuple[int, int]:
    conn = sqlite3.connect(db)
    try:
        accepted = conn.execute(
            "SELECT COUNT(*) FROM message_log WHERE outcome = 'AA'").fetchone()[0]
        steps = conn.execute("SELECT COUNT(*) FROM steps").fetchone()[0]
        return int(accepted), int(steps)
    finally:
        conn.close()


async def main(quick: bool) -> int:
    one_n, eight_n, steady_s = (500, 250, 3.0) if quick else (5000, 2500, 20.0)
    results: dict[str, Any] = {"machine": machine(), "quick": quick, "targets": TARGETS,
                               "parser": parser_costs(200 if quick else 2000)}
    with tempfile.TemporaryDirectory() as tmp, BrokerUnderTest(Path(tmp)) as broker:
        await throughput(broker.port, 1, 50, 10_000_000)  # warm-up
        results["one_sender"] = await throughput(broker.port, 1, one_n, 0)
        results["eight_senders"] = await throughput(broker.port, 8, eight_n, 1_000_000)
        results["thirty_two_senders"] = await throughput(broker.port, 32, eight_n // 4,
                                                         3_000_000)
        results["steady_200"] = await steady(broker.port, 200, steady_s, 2_000_000)
        sent = (50 + one_n + 8 * eight_n + 32 * (eight_n // 4)
                + results["steady_200"]["messages"])
        accepted, steps = durable_count(broker.db)
    results["durable"] = {"sent": sent, "accepted_in_log": accepted, "steps": steps}
    one, eight, st = results["one_sender"], results["eight_senders"], results["steady_200"]
    p = results["parser"]
    table = [
        ("figure", "measured", "target", "ratio"),
        ("1 sender, messages/s", f"{one['per_s']}", f"≥ {TARGETS['one_sender_per_s']}",
         f"{one['per_s'] / TARGETS['one_sender_per_s']:.2f}×"),
        ("1 sender, ACK p50 / p99 ms", f"{one['p50_ms']} / {one['p99_ms']}", "", ""),
        ("8 senders, messages/s", f"{eight['per_s']}", f"≥ {TARGETS['eight_senders_per_s']}",
         f"{eight['per_s'] / TARGETS['eight_senders_per_s']:.2f}×"),
        ("8 senders, ACK p50 / p99 ms", f"{eight['p50_ms']} / {eight['p99_ms']}", "", ""),
        ("32 senders, messages/s", f"{results['thirty_two_senders']['per_s']}", "", ""),
        ("32 senders, ACK p50 / p99 ms", f"{results['thirty_two_senders']['p50_ms']} / "
         f"{results['thirty_two_senders']['p99_ms']}", "", ""),
        ("steady 200/s, ACK p50 / p99 ms", f"{st['p50_ms']} / {st['p99_ms']}",
         f"p99 ≤ {TARGETS['steady_p99_ms']}", ""),
        ("durable: accepted in log / sent", f"{accepted} / {sent}", "all", ""),
        ("parse one ORM (µs): broker / python-hl7 / hl7apy",
         f"{p.get('broker_parser_us')} / {p.get('python_hl7_us', '-')} / "
         f"{p.get('hl7apy_us', '-')}", "", ""),
    ]
    write_results("hl7_ingest_quick" if quick else "hl7_ingest", results, table)
    failures = (one["failures"] + eight["failures"] + st["failures"]
                + results["thirty_two_senders"]["failures"])
    if failures or accepted != sent or steps != sent:
        print(f"FAILED: {failures} non-AA answers; {accepted} accepted of {sent} sent; "
              f"{steps} steps", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short bounded run (CI)")
    sys.exit(asyncio.run(main(parser.parse_args().quick)))
