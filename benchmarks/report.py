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
ORDER = ("real_clients", "scale", "hl7_clients", "hl7_ingest", "mwl_query", "ups", "upstream",
         "fhir_intake", "query_log_ab",
         "cfind_dos", "mpps", "completion", "footprint", "load", "crash", "fuzz_live",
         "ha_figures", "ha_soak")


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


def _ms(value: float) -> str:
    return f"{value:.2f} ms"


def unmodified_clients(suffix: str) -> str:
    """Issue 14's figures as unmodified clients see them: each beside its peer, the ratio,
    the broker's CPU and the limit of this machine."""
    rc, hc = _load(f"real_clients{suffix}"), _load(f"hl7_clients{suffix}")
    if rc is None or hc is None:
        return ""
    rows = [("figure", "broker", "peer", "ratio", "broker CPU", "limit", "target")]
    b, w = rc["broker"], rc.get("wlmscpfs", {})
    one = b["findscu_20_on_one_association_ms"]
    theirs = w.get("findscu_20_on_one_association_ms")
    rows.append((f"C-FIND {rc['items']:,} items, DCMTK findscu, 20 queries on one association",
                 _ms(one), f"wlmscpfs {_ms(theirs)}" if theirs else "-",
                 f"{theirs / one:.1f}×" if theirs else "-",
                 f"{b['findscu_cpu_ms_per_query']} ms/query", "", "≤ 10 ms, ≥ 50×"))
    stock = b["stock_pynetdicom_kept_open"]
    theirs = w.get("stock_pynetdicom_kept_open", {}).get("p50_ms")
    client = stock.get("client_cpu_ms_per_query")
    ceiling = f"client's own CPU {client} ms/query: ≤ {theirs / client:.1f}×" if (
        client and theirs) else ""
    rows.append(("C-FIND, stock pynetdicom 3.0.4, association kept open (p50)",
                 _ms(stock["p50_ms"]), f"wlmscpfs {_ms(theirs)}" if theirs else "-",
                 f"{theirs / stock['p50_ms']:.1f}×" if theirs else "-",
                 f"{b['stock_pynetdicom_cpu_ms_per_query']} ms/query", ceiling, "≥ 20×"))
    quiet, theirs_quiet = b.get("stock_pynetdicom_quiet"), w.get("stock_pynetdicom_quiet", {})
    if quiet:
        theirs = theirs_quiet.get("p50_ms")
        client = quiet.get("client_cpu_ms_per_query")
        rows.append(("the same client with its LOG_RESPONSE_IDENTIFIERS = False (p50)",
                     _ms(quiet["p50_ms"]), f"wlmscpfs {_ms(theirs)}" if theirs else "-",
                     f"{theirs / quiet['p50_ms']:.1f}×" if theirs else "-", "",
                     f"client's own CPU {client} ms/query" if client else "", ""))
    scale = _load(f"scale{suffix}")
    if scale:
        sizes = scale["sizes"]
        rows.append((f"C-FIND {sizes[-1]['items']:,} items against 1,000, DCMTK findscu (20 on "
                     "one association)", f"{_ms(sizes[-1]['findscu_20_on_one_association_ms'])}"
                     f" / {_ms(sizes[0]['findscu_20_on_one_association_ms'])}", "-",
                     f"{scale['ratio_largest_to_1000']}×",
                     f"{sizes[-1]['broker_cpu_ms_per_query']} ms/query", "",
                     f"≤ {scale['target_ratio']}×"))
    m = rc["mpps"]
    rows.append(("MPPS N-CREATE + N-SET, 8 stock pynetdicom SCU processes",
                 f"{m['pairs_per_s']} pairs/s", "-", "-", f"{m['broker_cpu_ms_per_pair']} ms/pair",
                 "", "≥ 120 pairs/s, ≤ 1.5 ms/pair"))
    runs, limit = hc["runs"], hc["limit_single_row_commits_per_s"]
    for key, label, target, lim in (
            ("plain_8", "HL7 ORM^O01, plain asyncio client, 8 senders", "≥ 2,500/s, ≤ 0.4 ms",
             "2 cores: 0.8 ms CPU/msg at 2,500/s"),
            ("mllp_send_8", "HL7 ORM^O01, python-hl7 mllp_send, 8 processes", "", ""),
            ("plain_1", "HL7 ORM^O01, plain asyncio client, 1 sender", "≥ 900/s",
             f"{limit:,.0f} durable commits/s"),
            ("mllp_send_1", "HL7 ORM^O01, python-hl7 mllp_send, 1 process", "", ""),
            ("plain_steady_200", "HL7 ORM^O01 at a steady 200/s, ACK p99", "p99 ≤ 25 ms", "")):
        run = runs[key]
        value = f"p99 {_ms(run['p99_ms'])}" if key == "plain_steady_200" else (
            f"{run['per_s']:,.0f} msg/s")
        rows.append((label, value, "-", "-", f"{run['broker_cpu_ms_per_msg']} ms/msg", lim,
                     target))
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return ("## Unmodified clients (issue 14)\n\n"
            f"real_clients {rc['machine']['date']}, hl7_clients {hc['machine']['date']}; "
            "the peers in the same run; broker CPU from /proc.\n\n" + "\n".join(lines) + "\n")


def main(quick: bool) -> int:
    suffix = "_quick" if quick else ""
    sections = [unmodified_clients(suffix)] if _load(f"real_clients{suffix}") else []
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
