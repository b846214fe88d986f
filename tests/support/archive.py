"""Orthanc as the archive: C-STORE SCP and storage commitment SCP on a loopback port, with the
broker declared in its DicomModalities so that it sends its reports back to the broker."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.support.broker import free_port


class OrthancArchive:
    ae_title = "ORTHANC"

    def __init__(self, folder: Path, broker_ae: str, broker_port: int) -> None:
        self.folder = folder
        self.port = free_port()
        self.http_port = free_port()
        self.broker_ae, self.broker_port = broker_ae, broker_port
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> OrthancArchive:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "archive", "DicomAet": self.ae_title, "DicomPort": self.port,
            "HttpPort": self.http_port, "HttpServerEnabled": True,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "DicomCheckCalledAet": False, "DicomScpTimeout": 30,
            "DicomModalities": {"broker": [self.broker_ae, "127.0.0.1", self.broker_port]},
        }
        conf = self.folder / "orthanc.json"
        conf.write_text(json.dumps(config))
        with open(self.folder / "orthanc.log", "ab") as log:
            self.proc = subprocess.Popen(["Orthanc", str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"Orthanc exited: {self.log_text()[-2000:]}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("Orthanc is not listening")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def log_text(self) -> str:
        path = self.folder / "orthanc.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def instances(self) -> list[str]:
        """The SOP Instance UIDs Orthanc holds (through its REST API)."""
        url = f"http://127.0.0.1:{self.http_port}/tools/find"
        body = json.dumps({"Level": "Instance", "Query": {}, "Expand": True}).encode()
        with urllib.request.urlopen(urllib.request.Request(url, body), timeout=10) as rsp:
            found = json.loads(rsp.read())
        return [i["MainDicomTags"]["SOPInstanceUID"] for i in found]

    @staticmethod
    def available() -> bool:
        return shutil.which("Orthanc") is not None
