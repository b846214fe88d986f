"""The broker's memory while associations stream one DIMSE message in endless non-final data
set fragments (16 KiB P-DATA-TF PDUs, after a real association negotiation).

- bounded: `mwl-broker serve` on its defaults (dicom.max_message_bytes 4 MiB); N associations
  at once each stream up to 4 × the bound; the broker aborts each past the bound. RSS before,
  the peak during (VmHWM) and after, then a C-FIND on a new association.
- unbounded reference (pynetdicom's own behaviour): the bound set to 1 GiB, M associations each
  stream a fixed amount and close; the peak grows with the bytes sent.

    python benchmarks/dimse_memory.py           # 16 bounded associations; 4 × 64 MiB unbounded
    python benchmarks/dimse_memory.py --quick   # 4 bounded; 2 × 16 MiB unbounded (CI)
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import BrokerUnderTest, machine, write_results
from broker.dicom.pynetdicom_patches.message_bound import DEFAULT_MAX_MESSAGE_BYTES
from tests.support.dicom_wire import associate, find, memory_kib, read_pdu, stream_fragments

MIB = 1 << 20
#: the bounded broker must stay within this many bounds of growth for N associations at once
TARGET_GROWTH_PER_ASSOCIATION_BOUNDS = 2.0


def _mib(kib: int) -> float:
    return round(kib / 1024, 1)


def run(folder: Path, options: tuple[str, ...], associations: int, per_association: int,
        expect_abort: bool) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    with BrokerUnderTest(folder, "logging.level=WARNING", *options) as broker:
        assert broker.proc is not None
        pid, port = broker.proc.pid, broker.dicom_port
        assert find(port) == 0x0000  # warm-up: the first association loads what all use
        before = memory_kib(pid, "VmRSS")
        outcomes: list[tuple[int, bool]] = []
        lock = threading.Lock()

        def one(k: int) -> None:
            with associate(port, calling=f"STREAM{k:02d}") as sock:
                sent = stream_fragments(sock, per_association)
                aborted = False
                if expect_abort:
                    sock.settimeout(60.0)
                    answer = read_pdu(sock)
                    aborted = answer is not None and answer[0] == 0x07
                with lock:
                    outcomes.append((sent, aborted))
                if not expect_abort:  # hold the message open until every stream is in
                    barrier.wait(120)

        barrier = threading.Barrier(associations + 1)
        started = time.perf_counter()
        threads = [threading.Thread(target=one, args=(k,)) for k in range(associations)]
        for thread in threads:
            thread.start()
        if not expect_abort:
            while len(outcomes) < associations and any(t.is_alive() for t in threads):
                time.sleep(0.05)
            during = memory_kib(pid, "VmRSS")
            barrier.wait(120)
        for thread in threads:
            thread.join(120)
        seconds = time.perf_counter() - started
        if expect_abort:
            during = memory_kib(pid, "VmRSS")
        peak = memory_kib(pid, "VmHWM")
        time.sleep(0.5)  # the aborted/closed associations end
        after = memory_kib(pid, "VmRSS")
        served = find(port) == 0x0000
    sent = [s for s, _ in outcomes]
    return {"associations": associations, "per_association_limit_bytes": per_association,
            "sent_mib_total": round(sum(sent) / MIB, 1),
            "sent_mib_max_one": round(max(sent) / MIB, 1),
            "aborted": sum(1 for _, a in outcomes if a),
            "rss_before_mib": _mib(before), "rss_during_mib": _mib(during),
            "peak_mib": _mib(peak), "rss_after_mib": _mib(after),
            "growth_mib": round((peak - before) / 1024, 1),
            "cfind_after_ok": served, "seconds": round(seconds, 2)}


def main(quick: bool) -> int:
    bound = DEFAULT_MAX_MESSAGE_BYTES
    n, m, reference_each = (4, 2, 16 * MIB) if quick else (16, 4, 64 * MIB)
    results: dict[str, Any] = {"machine": machine(), "max_message_bytes": bound,
                               "fragment_bytes": 16 << 10}
    with tempfile.TemporaryDirectory() as tmp:
        results["bounded"] = run(Path(tmp) / "bounded", (), n, 4 * bound, True)
    with tempfile.TemporaryDirectory() as tmp:
        results["unbounded_reference"] = run(
            Path(tmp) / "unbounded", (f"dicom.max_message_bytes={1 << 30}",), m,
            reference_each, False)
    b, u = results["bounded"], results["unbounded_reference"]
    target = TARGET_GROWTH_PER_ASSOCIATION_BOUNDS * n * bound / MIB
    results["target_growth_mib"] = target
    ok = b["aborted"] == n and b["cfind_after_ok"] and b["growth_mib"] <= target
    results["ok"] = ok
    name = "dimse_memory_quick" if quick else "dimse_memory"
    table = [("scenario", "associations", "sent MiB (max one)", "RSS before / during / peak / "
              "after MiB", "growth MiB", "aborted", "C-FIND after")]
    for label, r in (("bounded, 4 MiB (default)", b), ("unbounded reference (1 GiB)", u)):
        table.append((label, str(r["associations"]),
                      f"{r['sent_mib_total']} ({r['sent_mib_max_one']})",
                      f"{r['rss_before_mib']} / {r['rss_during_mib']} / {r['peak_mib']} / "
                      f"{r['rss_after_mib']}", str(r["growth_mib"]), str(r["aborted"]),
                      "ok" if r["cfind_after_ok"] else "FAILED"))
    write_results(name, results, table)
    print(f"bounded growth {b['growth_mib']} MiB (target ≤ {target:g}): "
          + ("ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 associations (CI)")
    socket.setdefaulttimeout(60.0)
    sys.exit(main(parser.parse_args().quick))
