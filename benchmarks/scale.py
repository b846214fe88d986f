"""Issue 14's scale figure: the broker's worklist answer at 1,000, 10,000 and 100,000 items
(the same 36 matches for station CT01 today at every size), as DCMTK ``findscu`` (unmodified,
20 query files on one association) sees it, with the broker's CPU per query from /proc.
Target: 100,000 items within 1.5× of 1,000.

    python benchmarks/scale.py            # 1,000 / 10,000 / 100,000
    python benchmarks/scale.py --quick    # 1,000 / 10,000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import BrokerUnderTest, machine, write_results
from benchmarks.ha_soak import cpu_seconds, others
from benchmarks.mwl_query import identifier, populate
from benchmarks.real_clients import findscu
from benchmarks.worklist_data import items

TARGET_RATIO = 1.5
RUNS = 7  # findscu runs of 20 queries per size


def measure(folder: Path, size: int, query: Path) -> dict[str, Any]:
    (folder / "broker").mkdir(parents=True)
    broker = BrokerUnderTest(folder / "broker", "logging.level=WARNING")
    populate(broker.db, list(items(size)))
    with broker:
        assert broker.proc is not None
        findscu(broker.dicom_port, "MWLBROKER", query, 2)  # warm-up
        cpu0 = cpu_seconds(broker.proc.pid)
        runs = [findscu(broker.dicom_port, "MWLBROKER", query, 20) / 20 for _ in range(RUNS)]
        cpu = cpu_seconds(broker.proc.pid) - cpu0
    return {"items": size, "findscu_20_on_one_association_ms": round(statistics.median(runs), 2),
            "runs_ms": [round(r, 2) for r in runs],
            "broker_cpu_ms_per_query": round(cpu * 1000 / (20 * RUNS), 3)}


def main(quick: bool) -> int:
    sizes = [1000, 10000] if quick else [1000, 10000, 100000]
    results: dict[str, Any] = {"machine": machine(), "quick": quick, "others_before": others(),
                               "target_ratio": TARGET_RATIO, "sizes": []}
    with tempfile.TemporaryDirectory() as tmp:
        query = Path(tmp) / "station.dcm"
        identifier("station").save_as(query, implicit_vr=True, little_endian=True)
        for size in sizes:
            results["sizes"].append(measure(Path(tmp) / str(size), size, query))
            print(results["sizes"][-1], flush=True)
    first, last = results["sizes"][0], results["sizes"][-1]
    results["ratio_largest_to_1000"] = round(
        last["findscu_20_on_one_association_ms"] / first["findscu_20_on_one_association_ms"], 2)
    results["others_after"] = others()
    rows = [("items", "findscu ms/query (20 on one association)", "broker CPU ms/query")]
    rows += [(f"{s['items']:,}", str(s["findscu_20_on_one_association_ms"]),
              str(s["broker_cpu_ms_per_query"])) for s in results["sizes"]]
    rows.append((f"{last['items']:,} / 1,000", f"{results['ratio_largest_to_1000']}×",
                 f"target ≤ {TARGET_RATIO}×"))
    write_results("scale_quick" if quick else "scale", results, rows)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 items only")
    raise SystemExit(main(parser.parse_args().quick))
