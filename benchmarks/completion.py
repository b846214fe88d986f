"""Closing the loop with Orthanc in it: time from MPPS COMPLETED to the ORU^R01 completion
notice at the RIS, over N procedures played by the modality simulator (worklist query, MPPS
IN PROGRESS, 2 images C-STOREd into Orthanc, IAN, MPPS COMPLETED); the broker asks Orthanc to
commit the images and Orthanc reports back on a new association.

    python benchmarks/completion.py            # 50 procedures
    python benchmarks/completion.py --quick    # 10 procedures (CI)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import BrokerUnderTest, machine, percentile, write_results
from benchmarks.mpps import RisThread
from broker.cli.simulator import Endpoint, Plan, run
from broker.hl7.mllp import MllpClient
from tests.support.archive import OrthancArchive
from tests.support.broker import free_port, mappings_with_orc18_station
from tests.support.ris import Ris, segment
from tests.support.samples import order

STATION = "CT01"


async def feed(port: int, count: int) -> None:
    async with MllpClient("127.0.0.1", port) as client:
        for n in range(count):
            await client.send(order(n, station=STATION).encode())


class OruClock(RisThread):
    """The RIS listener, noting when each ORU arrives (by its study UID)."""

    def __enter__(self) -> OruClock:
        super().__enter__()
        original = Ris._answer.__get__(self.ris)  # the plain RIS, without the CM clock

        async def answer(message: str, writer: Any) -> None:
            if segment(message, "MSH")[9].startswith("ORU"):
                for line in message.split("\r"):
                    if line.startswith("OBX|") and line.split("|")[3].startswith("113014"):
                        self.arrived.setdefault(line.split("|")[5], time.time())
            await original(message, writer)

        self.ris._answer = answer  # type: ignore[method-assign]
        return self


def main(quick: bool) -> int:
    procedures = 10 if quick else 50
    ris_port = free_port()
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, OruClock(ris_port) as ris:
        folder = Path(tmp)
        mappings = mappings_with_orc18_station(folder)
        broker = BrokerUnderTest(
            folder, f"mappings.directory={mappings}",
            f"outbound.destinations=[{{name: ris, host: 127.0.0.1, port: {ris_port}, timeout: 5}}]",
            "outbound.poll=0.2", "storage_commitment.ae_title=ORTHANC",
            "storage_commitment.same_association_wait=0.1")
        with OrthancArchive(folder / "orthanc", "MWLBROKER", broker.dicom_port) as archive:
            broker.options = (*broker.options, f"storage_commitment.port={archive.port}")
            with broker:
                asyncio.run(feed(broker.port, procedures))
                endpoint = Endpoint("127.0.0.1", broker.dicom_port, "MWLBROKER")
                completed_at: dict[str, float] = {}
                for n in range(procedures):
                    plan = Plan(STATION, endpoint, endpoint,
                                Endpoint("127.0.0.1", archive.port, "ORTHANC"),
                                accession=order(n).accession, series=1, images=2,
                                ian_to=endpoint)
                    try:
                        result = run(plan, say=lambda _: None)
                    except Exception as exc:
                        failures.append(f"procedure {n}: {exc}")
                        continue
                    completed_at[result.study_uid] = result.final_sent_at
                deadline = time.time() + 60
                while (any(k not in ris.arrived for k in completed_at)
                       and time.time() < deadline):
                    time.sleep(0.05)
    latencies = [(ris.arrived[k] - t) * 1000 for k, t in completed_at.items()
                 if k in ris.arrived]
    figures = {"procedures": procedures, "notices": len(latencies),
               "p50_ms": round(percentile(latencies, 50), 1),
               "p99_ms": round(percentile(latencies, 99), 1),
               "max_ms": round(max(latencies, default=float("nan")), 1),
               "failures": failures[:3]}
    results = {"machine": machine(), "quick": quick, "completed_to_oru": figures}
    rows = [("figure", "measured", "target"),
            ("MPPS COMPLETED → ORU^R01 at the RIS, p50 / p99 ms (Orthanc commits; includes "
             "the N-SET round trip)", f"{figures['p50_ms']} / {figures['p99_ms']}",
             "reported"),
            ("completion notices received / procedures", f"{len(latencies)} / {procedures}",
             "all"), ("simulator failures", str(len(failures)), "0")]
    write_results("completion_quick" if quick else "completion", results, rows)
    return 1 if failures or len(latencies) < procedures else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 procedures (CI)")
    sys.exit(main(parser.parse_args().quick))
