"""Two benchmark runs side by side: each figure of each result table, before and after.

    python benchmarks/compare.py BEFORE_DIR AFTER_DIR [--quick] [--out FILE]

BEFORE_DIR and AFTER_DIR are ``benchmarks/results`` folders of two checkouts; the figures are
read from their Markdown tables (``<name>_quick.md`` with --quick), joined by name.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: result files whose names changed between runs: (old, new)
RENAMED = {"closure": "completion"}
NAMES = ("hl7_ingest", "mwl_query", "cfind_dos", "mpps", "completion", "dimse_memory",
         "footprint", "load", "crash")


def figures(path: Path) -> dict[str, str]:
    """The 'figure | measured' rows of a result table."""
    rows: dict[str, str] = {}
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0] not in ("figure", "") and not cells[0].startswith("-"):
            rows[cells[0]] = cells[1]
    return rows


def result_file(folder: Path, name: str, suffix: str) -> Path:
    path = folder / f"{name}{suffix}.md"
    old = {v: k for k, v in RENAMED.items()}.get(name)
    if not path.exists() and old is not None:
        path = folder / f"{old}{suffix}.md"
    return path


def compare(before: Path, after: Path, quick: bool) -> str:
    suffix = "_quick" if quick else ""
    out = [f"# Benchmarks before and after ({'quick' if quick else 'full'} runs)", "",
           f"before: `{before}` · after: `{after}`", ""]
    for name in NAMES:
        old, new = (figures(result_file(d, name, suffix)) for d in (before, after))
        if not old and not new:
            continue
        out += [f"## {name}", "", "| figure | before | after |", "|---|---|---|"]
        for figure in [*old, *(f for f in new if f not in old)]:
            out.append(f"| {figure} | {old.get(figure, '-')} | {new.get(figure, '-')} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    text = compare(args.before, args.after, args.quick)
    if args.out is not None:
        args.out.write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
