"""FHIR R4 order intake: transaction Bundles (Patient + ServiceRequest) per second posted to
``/fhir`` of ``mwl-broker serve`` by plain aiohttp clients (one keep-alive session each,
each waiting for its answer as an order placer does), with 1 and with 8 clients; beside
each figure the broker's CPU per Bundle (utime + stime of its process from /proc) and the
answer latencies. Every Bundle is distinct, must be answered 200, and must leave its
ServiceRequest and its scheduled step in the database; a repost of Bundles already taken
(the idempotent path: digests compared, nothing written) is timed too.

    python benchmarks/fhir_intake.py --quick    # fewer Bundles (< 30 s)
    python benchmarks/fhir_intake.py
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import BrokerUnderTest, machine, percentile, write_results
from benchmarks.ha_soak import cpu_seconds
from tests.support.db import Db
from tests.support.fhir import FHIR_JSON, order_bundle

TARGETS = {"eight_clients_per_s": 150, "one_client_per_s": 60, "cpu_ms_per_bundle": 10.0}


def bundles(first: int, count: int) -> list[bytes]:
    import json

    out = []
    for n in range(first, first + count):
        day = 1 + n % 28
        out.append(json.dumps(order_bundle(
            pid=f"BP{n:07d}", accession=f"BA{n:07d}", placer=f"BO{n:07d}",
            station=f"CT{n % 4 + 1:02d}", when=f"2027-03-{day:02d}T09:30:00+01:00")).encode())
    return out


async def post_all(port: int, payloads: list[bytes], clients: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/fhir"
    latencies: list[float] = []
    failures = 0

    async def client(share: list[bytes]) -> None:
        nonlocal failures
        async with aiohttp.ClientSession(headers={"Content-Type": FHIR_JSON,
                                                  "Accept": FHIR_JSON}) as session:
            for body in share:
                t0 = time.perf_counter()
                async with session.post(url, data=body) as answer:
                    await answer.read()
                    failures += answer.status != 200
                latencies.append((time.perf_counter() - t0) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(client(payloads[k::clients]) for k in range(clients)))
    seconds = time.perf_counter() - start
    return {"bundles": len(payloads), "clients": clients, "seconds": round(seconds, 3),
            "per_s": round(len(payloads) / seconds, 1), "failures": failures,
            "p50_ms": round(percentile(latencies, 50), 2),
            "p99_ms": round(percentile(latencies, 99), 2)}


def run(broker: BrokerUnderTest, payloads: list[bytes], clients: int) -> dict[str, Any]:
    pid = broker.proc.pid if broker.proc is not None else None
    cpu0 = cpu_seconds(pid)
    result = asyncio.run(post_all(broker.admin_port, payloads, clients))
    result["broker_cpu_ms_per_bundle"] = round(
        (cpu_seconds(pid) - cpu0) * 1000 / len(payloads), 3)
    print(result, flush=True)
    return result


def main(quick: bool) -> int:
    one, eight = (150, 400) if quick else (800, 3000)
    results: dict[str, Any] = {"machine": machine(), "quick": quick, "targets": TARGETS}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "broker"
        folder.mkdir()
        with BrokerUnderTest(folder, "logging.level=WARNING") as broker:
            asyncio.run(post_all(broker.admin_port, bundles(10_000_000, 20), 1))  # warm-up
            results["one_client"] = run(broker, bundles(0, one), 1)
            results["eight_clients"] = run(broker, bundles(one, eight), 8)
            results["repost_eight_clients"] = run(broker, bundles(one, eight), 8)
            db = Db(broker.db)
            requests = db.query("SELECT COUNT(*) FROM fhir_resources"
                                " WHERE resource_type = 'ServiceRequest'")[0][0]
            steps = db.query("SELECT COUNT(*) FROM steps")[0][0]
    expected = one + eight + 20
    results["stored_service_requests"], results["stored_steps"] = requests, steps
    ok = (requests == expected and steps == expected
          and all(results[k]["failures"] == 0 for k in
                  ("one_client", "eight_clients", "repost_eight_clients")))
    results["ok"] = ok
    table = [("run", "Bundles", "Bundles/s", "p50 ms", "p99 ms", "broker CPU ms/Bundle",
              "failures")]
    for key, label in (("one_client", "1 client"), ("eight_clients", "8 clients"),
                       ("repost_eight_clients", "8 clients, same Bundles again")):
        r = results[key]
        table.append((label, str(r["bundles"]), str(r["per_s"]), str(r["p50_ms"]),
                      str(r["p99_ms"]), str(r["broker_cpu_ms_per_bundle"]),
                      str(r["failures"])))
    table.append(("stored", f"{requests} ServiceRequests, {steps} steps (expected "
                  f"{expected})", "", "", "", "", "ok" if ok else "MISMATCH"))
    write_results("fhir_intake_quick" if quick else "fhir_intake", results, table)
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer Bundles (CI, < 30 s)")
    sys.exit(main(parser.parse_args().quick))
