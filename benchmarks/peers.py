"""DCMTK wlmscpfs and Orthanc (with its worklist plugin) as peers on loopback ports."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

from benchmarks.common import free_port

ORTHANC_PLUGIN = Path("/usr/share/orthanc/plugins/libModalityWorklists.so")


def _wait(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{what} is not listening on {port}")


class Wlmscpfs:
    """``wlmscpfs -dfp ROOT PORT``; the worklist lives in ROOT/<called AE title>/."""

    ae_title = "WLMSCPFS"

    def __init__(self, folder: Path) -> None:
        self.root = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def items_folder(self) -> Path:
        return self.root / self.ae_title

    def __enter__(self) -> Wlmscpfs:
        self.proc = subprocess.Popen(["wlmscpfs", "-dfp", str(self.root), str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(self.port, self.proc, "wlmscpfs")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(20)

    @staticmethod
    def available() -> bool:
        return shutil.which("wlmscpfs") is not None


class Orthanc:
    """Orthanc with the ModalityWorklists plugin reading ``items_folder``."""

    ae_title = "ORTHANC"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.items_folder = folder / "worklists"
        self.port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Orthanc:
        self.items_folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "bench", "DicomAet": self.ae_title, "DicomPort": self.port,
            "HttpPort": self.http_port, "HttpServerEnabled": True,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "Plugins": [str(ORTHANC_PLUGIN)],
            "Worklists": {"Enable": True, "Database": str(self.items_folder)},
            "DicomCheckCalledAet": False, "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowFind": True, "DicomScpTimeout": 30,
            # the worklist plugin answers only modalities that Orthanc knows
            "DicomModalities": {name.lower(): [name, "127.0.0.1", 104]
                                for name in ("MWLQUERY", "FINDSCU")},
        }
        conf = self.folder / "orthanc.json"
        conf.write_text(json.dumps(config))
        log = open(self.folder / "orthanc.log", "wb")
        self.proc = subprocess.Popen(["Orthanc", str(conf)], stdout=log, stderr=log)
        _wait(self.port, self.proc, "Orthanc", timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    @staticmethod
    def available() -> bool:
        return shutil.which("Orthanc") is not None and ORTHANC_PLUGIN.exists()
