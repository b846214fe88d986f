"""Helpers shared by the benchmarks: a real broker process, statistics, result files."""

from __future__ import annotations

import json
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BrokerUnderTest:
    """``mwl-broker serve`` in its own process, on loopback, with a fresh SQLite file."""

    def __init__(self, folder: Path, *options: str) -> None:
        self.folder = folder
        self.port = free_port()
        self.dicom_port = free_port()
        self.db = folder / "bench.sqlite"
        self.log = folder / "broker.log"
        self.options = options
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BrokerUnderTest:
        args = [str(BIN / "mwl-broker"), "serve", "-o", f"database.path={self.db}",
                "-o", "mllp.host=127.0.0.1", "-o", f"mllp.port={self.port}",
                "-o", "dicom.host=127.0.0.1", "-o", f"dicom.port={self.dicom_port}"]
        for option in self.options:
            args += ["-o", option]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"broker did not start: {self.log.read_text()}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


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
