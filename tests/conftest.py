"""Shared fixtures: real broker processes and in-process brokers on loopback ports."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.app import Broker
from broker.config import Settings
from broker.hl7.mllp import MllpClient

ROOT = Path(__file__).resolve().parent.parent
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


class BrokerProcess:
    """The real ``mwl-broker serve`` command on a loopback port with its own SQLite file."""

    def __init__(self, folder: Path, options: tuple[str, ...] = ()) -> None:
        self.folder = folder
        self.db = folder / "broker.sqlite"
        self.port = free_port()
        self.dicom_port = free_port()
        self.admin_port = free_port()
        self.options = options
        self.log = folder / "broker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [str(BIN / "mwl-broker"), "serve", "-o", f"database.path={self.db}",
                "-o", "mllp.host=127.0.0.1", "-o", f"mllp.port={self.port}",
                "-o", "dicom.host=127.0.0.1", "-o", f"dicom.port={self.dicom_port}",
                "-o", "admin.host=127.0.0.1", "-o", f"admin.port={self.admin_port}"]
        for option in self.options:
            args += ["-o", option]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.folder)
        try:
            wait_for_port(self.port, proc=self.proc)
            wait_for_port(self.dicom_port, proc=self.proc)
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


@pytest.fixture
def broker_process(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


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
    for key, value in mllp.items():
        setattr(settings.mllp, key, value)
    return settings


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    """An in-process broker (same code as ``serve``) on an ephemeral port."""
    b = Broker(make_settings(tmp_path, idle_timeout=5.0, shutdown_grace=2.0))
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


async def send(port: int, *payloads: bytes, timeout: float = 10.0) -> list[str]:
    """Send messages on one connection; the acknowledgements as text."""
    async with MllpClient("127.0.0.1", port, timeout=timeout) as client:
        return [(await client.send(p)).decode("utf-8", errors="replace") for p in payloads]


def msa(ack: str) -> list[str]:
    line = next(seg for seg in ack.split("\r") if seg.startswith("MSA"))
    return line.split("|")


def err(ack: str) -> list[str]:
    line = next((seg for seg in ack.split("\r") if seg.startswith("ERR")), "")
    return line.split("|")


class Db:
    """Read-only look at a broker's SQLite file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def counts(self) -> dict[str, int]:
        return {t: self.query(f"SELECT COUNT(*) FROM {t}")[0][0]
                for t in ("patients", "procedures", "steps", "step_stations")}

    def domain_snapshot(self) -> list[tuple[Any, ...]]:
        """Everything but the message log, to show a rejected message changed nothing."""
        return (self.query("SELECT patient_id, issuer, attrs, merged_into FROM patients "
                           "ORDER BY id")
                + self.query("SELECT study_uid, attrs, patient_fk FROM procedures ORDER BY id")
                + self.query("SELECT sps_id, status, attrs FROM steps ORDER BY id"))

    def patient(self, patient_id: str, issuer: str = "") -> dict[str, Any]:
        rows = self.query("SELECT attrs, merged_into, id FROM patients WHERE patient_id = ? "
                          "AND issuer = ?", patient_id, issuer)
        assert rows, f"no patient {patient_id}/{issuer}"
        return {**json.loads(rows[0][0]), "_merged_into": rows[0][1], "_id": rows[0][2]}

    def procedure(self, study_uid: str) -> dict[str, Any]:
        rows = self.query(
            "SELECT p.attrs, pt.patient_id, p.accession, p.placer_order, p.priority, p.id "
            "FROM procedures p JOIN patients pt ON pt.id = p.patient_fk WHERE study_uid = ?",
            study_uid)
        assert rows, f"no procedure {study_uid}"
        attrs = json.loads(rows[0][0])
        return {**attrs, "_patient_id": rows[0][1], "_accession": rows[0][2],
                "_placer": rows[0][3], "_priority": rows[0][4], "_id": rows[0][5]}

    def steps(self, study_uid: str) -> dict[str, dict[str, Any]]:
        rows = self.query(
            "SELECT s.sps_id, s.status, s.attrs, s.modality, s.start_dt, s.id FROM steps s "
            "JOIN procedures p ON p.id = s.procedure_fk WHERE p.study_uid = ? ORDER BY s.id",
            study_uid)
        out = {}
        for sps, status, attrs, modality, start_dt, pk in rows:
            stations = [r[0] for r in self.query(
                "SELECT station_aet FROM step_stations WHERE step_fk = ? ORDER BY station_aet",
                pk)]
            out[sps] = {**json.loads(attrs), "_status": status, "_modality": modality,
                        "_start_dt": start_dt, "_stations": stations}
        return out

    def log(self) -> list[tuple[Any, ...]]:
        return self.query("SELECT control_id, outcome, duplicate_of, message_type, error "
                          "FROM message_log ORDER BY id")


def run(coro: Any) -> Any:
    return asyncio.run(coro)
