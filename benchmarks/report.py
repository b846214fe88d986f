"""One report of every benchmark: `benchmarks/results/REPORT.md` (each result table, with the
date and machine it was measured on) and PNG plots made with matplotlib.

    python benchmarks/report.py           # from the full results
    python benchmarks/report.py --quick   # from the quick (CI) results
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

RESULTS = Path(__file__).resolve().parent / "results"
ORDER = ("hl7_ingest", "mwl_query", "cfind_dos", "mpps", "completion", "footprint", "load",
         "crash", "fuzz_live")


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def plot_worklist(data: dict[str, Any], out: Path) -> None:
    sizes = sorted(data["sizes"], key=int)
    x = [int(s) for s in sizes]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = [("broker", lambda s: data["sizes"][s]["station"]["p50_ms"]),
              ("DCMTK wlmscpfs", lambda s: data["sizes"][s].get("wlmscpfs", {})
               .get("station", {}).get("p50_ms")),
              ("Orthanc worklist plugin", lambda s: data["sizes"][s].get("orthanc", {})
               .get("station", {}).get("p50_ms"))]
    for label, value in series:
        points = [(xi, value(s)) for xi, s in zip(x, sizes, strict=True)
                  if value(s) is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("scheduled steps")
    ax.set_ylabel("station query p50 (ms, kept association)")
    ax.set_title("Modality worklist C-FIND latency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_ingest(data: dict[str, Any], out: Path) -> None:
    runs = [(label, data.get(key)) for label, key in (
        ("1 sender", "one_sender"), ("8 senders", "eight_senders"),
        ("32 senders", "thirty_two_senders"))]
    runs = [(label, run) for label, run in runs if run]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    left.bar([r[0] for r in runs], [r[1]["per_s"] for r in runs], color="#4c72b0")
    left.set_ylabel("messages/s (ACK awaited per message)")
    left.set_title("HL7 ingest throughput")
    width = 0.35
    positions = range(len(runs))
    right.bar([p - width / 2 for p in positions], [r[1]["p50_ms"] for r in runs], width,
              label="p50")
    right.bar([p + width / 2 for p in positions], [r[1]["p99_ms"] for r in runs], width,
              label="p99")
    right.set_xticks(list(positions), [r[0] for r in runs])
    right.set_ylabel("ACK latency (ms)")
    right.set_title("HL7 ACK latency")
    right.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(quick: bool) -> int:
    suffix = "_quick" if quick else ""
    sections = []
    plots = []
    for name in ORDER:
        md = RESULTS / f"{name}{suffix}.md"
        if md.exists():
            body = md.read_text().split("\n", 1)[1].strip()
            sections.append(f"## {name}\n\n{body}\n")
    ingest = _load(f"hl7_ingest{suffix}")
    if ingest:
        plot_ingest(ingest, RESULTS / f"hl7_ingest{suffix}.png")
        plots.append(f"hl7_ingest{suffix}.png")
    worklist = _load(f"mwl_query{suffix}")
    if worklist:
        plot_worklist(worklist, RESULTS / f"mwl_query{suffix}.png")
        plots.append(f"mwl_query{suffix}.png")
    text = ("# Benchmark report" + (" (quick runs)" if quick else "") + "\n\n"
            "Each table says when and on what it was measured; targets and the ratio to the "
            "target or the peer are in the tables.\n\n"
            + "\n".join(sections)
            + ("\n## Plots\n\n" + "\n".join(f"![{p}]({p})" for p in plots) + "\n"
               if plots else ""))
    (RESULTS / f"REPORT{suffix}.md").write_text(text)
    print(text)
    return 0 if sections else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="from the quick results")
    sys.exit(main(parser.parse_args().quick))
