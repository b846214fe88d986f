"""Issue 17's upstream figure: the time from a change on an upstream worklist (DCMTK
``wlmscpfs`` serving .wl files) to the broker's answer, and what one poll costs the broker.

The broker mirrors the upstream every ``--interval`` seconds; items are written to the
upstream's folder at a random moment of the poll cycle, and a stock pynetdicom SCU asks the
broker every 20 ms until the new item is in its answer (so the figure is about interval / 2
plus one poll). Broker CPU per poll from /proc over a quiet minute.

    python benchmarks/upstream.py --quick   # 100 upstream items, interval 1 s, 10 changes
    python benchmarks/upstream.py           # 1,000 upstream items, interval 5 s, 12 changes
"""

from __future__ import annotations

import argparse
import datetime
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from benchmarks.common import BrokerUnderTest, machine, percentile, write_results
from benchmarks.ha_soak import cpu_seconds, others
from benchmarks.peers import Wlmscpfs
from benchmarks.worklist_data import items, worklist_file

TODAY = datetime.date.today().strftime("%Y%m%d")


def today(ds: Dataset) -> Dataset:
    """A worklist item moved to today (what the upstream query asks for)."""
    ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate = TODAY
    return ds


def accessions(port: int) -> set[str]:
    """The accession numbers the broker answers for today's steps (a stock SCU)."""
    ae = AE(ae_title="BENCHSCU")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="MWLBROKER")
    try:
        ds = Dataset()
        ds.AccessionNumber = ""
        item = Dataset()
        item.ScheduledProcedureStepStartDate = TODAY
        ds.ScheduledProcedureStepSequence = [item]
        return {str(i.AccessionNumber) for s, i in assoc.send_c_find(
            ds, ModalityWorklistInformationFind) if s is not None and s.Status in
            (0xFF00, 0xFF01)}
    finally:
        assoc.release()


def main(quick: bool) -> int:
    size, interval, changes = (100, 1.0, 10) if quick else (1000, 5.0, 12)
    orders = list(items(size))
    spare = orders[:changes]  # copied under new accession numbers and Study UIDs
    results: dict[str, Any] = {"machine": machine(), "quick": quick, "upstream_items":
                               len(orders), "interval_s": interval, "others_before": others()}
    rng = random.Random(5)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        peer = Wlmscpfs(folder / "wlmscpfs")
        peer.items_folder.mkdir(parents=True, exist_ok=True)
        (peer.items_folder / "lockfile").touch()
        for n, o in enumerate(orders):
            today(worklist_file(o)).save_as(peer.items_folder / f"item{n:06d}.wl",
                                            enforce_file_format=True)
        with peer as upstream:
            (folder / "broker").mkdir()
            broker = BrokerUnderTest(
                folder / "broker", "logging.level=WARNING",
                f"upstream_worklists=[{{name: ris-mwl, ae_title: {upstream.ae_title}, "
                f"host: 127.0.0.1, port: {upstream.port}, interval: {interval}, timeout: 30, "
                "query: {days_before: 0, days_after: 0}}]")
            with broker:
                assert broker.proc is not None
                deadline = time.monotonic() + 120
                while len(accessions(broker.dicom_port)) < len(orders):
                    assert time.monotonic() < deadline, "the first mirror did not complete"
                    time.sleep(0.2)
                cpu0, t0 = cpu_seconds(broker.proc.pid), time.monotonic()
                time.sleep(10 * interval)  # quiet polls of an unchanged upstream
                results["broker_cpu_ms_per_quiet_poll"] = round(
                    (cpu_seconds(broker.proc.pid) - cpu0) * 1000 * interval
                    / (time.monotonic() - t0), 2)
                latencies = []
                for k, o in enumerate(spare):
                    time.sleep(rng.uniform(0, interval))
                    accession = f"NEW{k:06d}"
                    ds = today(worklist_file(o))
                    ds.AccessionNumber = accession  # an order the upstream did not have
                    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.77.{k}"
                    started = time.perf_counter()
                    ds.save_as(upstream.items_folder / f"new{k:04d}.wl",
                               enforce_file_format=True)
                    while accession not in accessions(broker.dicom_port):
                        if time.perf_counter() - started > 10 * interval + 30:
                            raise RuntimeError(f"{accession} did not reach the broker")
                        time.sleep(0.02)
                    latencies.append((time.perf_counter() - started) * 1000)
                results["change_to_answer_ms"] = {
                    "p50": round(statistics.median(latencies), 1),
                    "p99": round(percentile(latencies, 99), 1),
                    "max": round(max(latencies), 1), "n": len(latencies)}
    results["others_after"] = others()
    write_results("upstream_quick" if quick else "upstream", results, table(results))
    return 0


def table(r: dict[str, Any]) -> list[tuple[str, ...]]:
    c = r["change_to_answer_ms"]
    return [("figure", "measured"),
            ("upstream items (wlmscpfs), poll interval", f"{r['upstream_items']}, "
             f"{r['interval_s']} s"),
            ("upstream change → in the broker's answer, p50 / p99 / max ms",
             f"{c['p50']} / {c['p99']} / {c['max']} (n={c['n']})"),
            ("broker CPU per poll of an unchanged upstream, ms",
             str(r["broker_cpu_ms_per_quiet_poll"])),
            ("load average before / after", f"{r['others_before']['loadavg']} / "
             f"{r['others_after']['loadavg']}")]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    sys.exit(main(parser.parse_args().quick))
