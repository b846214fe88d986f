"""The broker under test: its paths, free loopback ports, the real ``serve`` process, settings."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from broker.app import Broker
from broker.config import Settings

ROOT = Path(__file__).resolve().parent.parent.parent
SAMPLES = ROOT / "testdata" / "hl7"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None
                  ) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


#: ``dicom.fast_path`` of the brokers the tests start (tests/conftest.py runs the main DICOM
#: tests with it on and off)
DICOM_FAST_PATH = True


class BrokerProcess:
    """The real ``mwl-broker serve`` command on a loopback port with its own SQLite file."""

    def __init__(self, folder: Path, options: tuple[str, ...] = ()) -> None:
        self.folder = folder
        #: tests on PostgreSQL: the database of the test (or module) that made this broker
        self.url = os.environ.get("MWL_DATABASE_URL", "")
        #: the SQLite file, or the URL of its PostgreSQL database
        self.db: Path | str = self.url or folder / "broker.sqlite"
        self.port = free_port()
        self.dicom_port = free_port()
        self.admin_port = free_port()
        self.options = options
        self.log = folder / "broker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, attempts: int = 3) -> None:
        """Start and wait until every listener answers; new ports and another try when one
        was taken between choosing it and binding it."""
        for attempt in range(attempts):
            try:
                self._start()
                return
            except RuntimeError as exc:
                if "address already in use" not in str(exc).lower() or attempt == attempts - 1:
                    raise
                self.port, self.dicom_port, self.admin_port = (free_port(), free_port(),
                                                               free_port())

    def _start(self) -> None:
        url = self.url
        path = self.folder / "broker.sqlite"
        args = [str(BIN / "mwl-broker"), "serve", "-o", f"database.path={path}",
                "-o", f"database.url={url}",
                "-o", "mllp.host=127.0.0.1", "-o", f"mllp.port={self.port}",
                "-o", "dicom.host=127.0.0.1", "-o", f"dicom.port={self.dicom_port}",
                "-o", "admin.host=127.0.0.1", "-o", f"admin.port={self.admin_port}"]
        if not DICOM_FAST_PATH:
            args += ["-o", "dicom.fast_path=false"]
        for option in self.options:
            args += ["-o", option]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.folder)
        try:
            wait_for_port(self.port, proc=self.proc)
            wait_for_port(self.dicom_port, proc=self.proc)
            if "admin.enabled=false" not in self.options:  # the console starts last
                wait_for_port(self.admin_port, proc=self.proc)
        except Exception:
            self.kill()
            raise RuntimeError(f"broker did not start:\n{self.log.read_text()}") from None

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return int(code)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Broker]:
    """An in-process broker (the same code as ``serve``) on ``settings``, stopped after."""
    b = Broker(settings)
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


def mappings_with_orc18_station(folder: Path) -> Path:
    """The shipped mappings, with ORM^O01 taking the station AE title from ORC-18."""
    import shutil

    target = folder / "mappings"
    shutil.copytree(ROOT / "mappings", target)
    orders = target / "orders.yaml"
    text = orders.read_text()
    anchor = "        ScheduledProcedureStepID: OBR-20\n"
    assert anchor in text
    orders.write_text(text.replace(
        anchor, anchor + '        ScheduledStationAETitle: "ORC-18[*].1"\n', 1))
    return target


def make_settings(folder: Path, **mllp: Any) -> Settings:
    settings = Settings()
    settings.database.path = str(folder / "broker.sqlite")
    settings.mllp.host = "127.0.0.1"
    settings.mllp.port = 0
    settings.dicom.host = "127.0.0.1"
    settings.dicom.port = 0
    settings.admin.port = 0
    settings.dicom.fast_path = DICOM_FAST_PATH
    for key, value in mllp.items():
        setattr(settings.mllp, key, value)
    return settings


def scraped_rejections(broker: BrokerProcess, listener: str, reason: str) -> float:
    """The running ``serve`` process's count of refusals by ``listener`` for ``reason``,
    read from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.admin_port}/metrics",
                                timeout=5) as answer:
        text = answer.read().decode()
    for line in text.splitlines():
        if line.startswith("mwl_rejections_total{") and f'reason="{reason}"' in line \
                and f'listener="{listener}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def rejections(broker: Broker, listener: str, reason: str) -> float:
    """The in-process broker's count of refusals by ``listener`` for ``reason``."""
    value = broker.metrics.registry.get_sample_value(
        "mwl_rejections_total", {"listener": listener, "reason": reason})
    return value or 0.0
