"""Helpers shared by the benchmarks: a real broker process, statistics, result files."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.broker import BrokerProcess, free_port  # one broker launcher for both

__all__ = ["PG_BENCH_SETTINGS", "BrokerUnderTest", "free_port", "machine", "percentile",
           "write_results"]
RESULTS = Path(__file__).resolve().parent / "results"
UNCAPPED = ("mllp.max_connections_per_address=0", "dicom.max_associations_per_address=0")
#: PostgreSQL as a site runs it for the benchmarks (with ``durable=True``): the test suite's
#: 16 MB of shared buffers is outgrown after some 60,000 ORMs, and the figures then measure
#: buffer evictions (PostgreSQL's CPU per message doubled) instead of the broker
PG_BENCH_SETTINGS = {"shared_buffers": "256MB", "max_wal_size": "2GB"}


class BrokerUnderTest(BrokerProcess):
    """``mwl-broker serve`` in its own process (the tests' BrokerProcess) as a context.

    Every benchmark client connects from 127.0.0.1, standing for many senders and modalities:
    the per-address connection caps are off unless a benchmark's options set them."""

    def __init__(self, folder: Path, *options: str) -> None:
        super().__init__(folder, (*UNCAPPED, *options))

    def __enter__(self) -> BrokerUnderTest:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def machine() -> dict[str, Any]:
    import os

    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def write_results(name: str, data: dict[str, Any], table: list[tuple[str, ...]]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    header, *rows = table
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    md = (f"# {name}\n\n{data['machine']['date']} · {data['machine']['cpus']} CPUs · "
          f"Python {data['machine']['python']}\n\n" + "\n".join(lines) + "\n")
    (RESULTS / f"{name}.md").write_text(md)
    print(md)
