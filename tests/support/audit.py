"""Audit trail tests: the shipped RELAX NG schema, RFC 5424 parsing, octet-counted frames, a
small TCP/UDP collector on loopback, and a real rsyslogd (imtcp plain and over TLS with the
ossl driver, imudp) writing what it receives to a file."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lxml import etree

from broker.audit.syslog import BOM
from tests.support.broker import free_port
from tests.support.certs import Pki

RSYSLOGD = Path("/usr/sbin/rsyslogd")
_SCHEMA: etree.RelaxNG | None = None
_HEADER = re.compile(rb"<(\d{1,3})>(\d) (\S+) (\S+) (\S+) (\S+) (\S+) (-|\[.*?\]) ")


def schema() -> etree.RelaxNG:
    """The PS3.15 A.5.1 schema as installed with the package."""
    global _SCHEMA
    if _SCHEMA is None:
        path = resources.files("broker.audit") / "schema" / "audit-message.rng"
        _SCHEMA = etree.RelaxNG(etree.fromstring(path.read_bytes()))
    return _SCHEMA


def validate(xml: bytes) -> etree._Element:
    """The parsed message; fails with the schema's complaints when it is not valid."""
    doc = etree.fromstring(xml)
    rng = schema()
    assert rng.validate(doc), f"{rng.error_log}\n{xml.decode()}"
    return doc


@dataclass(frozen=True)
class Syslog:
    pri: int
    version: str
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    structured_data: str
    msg: bytes

    @property
    def xml(self) -> bytes:
        assert self.msg.startswith(BOM), self.msg[:20]
        return self.msg[len(BOM):]


def parse_syslog(data: bytes) -> Syslog:
    """An RFC 5424 SYSLOG-MSG (header fields, then MSG)."""
    match = _HEADER.match(data)
    assert match is not None, data[:120]
    fields = [g.decode() for g in match.groups()]
    return Syslog(int(fields[0]), *fields[1:], msg=data[match.end():])  # type: ignore[misc]


def split_octet_counted(stream: bytes) -> list[bytes]:
    """The messages of an RFC 5425/6587 octet-counted stream (fails on a partial one)."""
    out = []
    while stream:
        length, sep, rest = stream.partition(b" ")
        assert sep and length.isdigit(), stream[:40]
        size = int(length)
        assert len(rest) >= size, "a partial frame"
        out.append(rest[:size])
        stream = rest[size:]
    return out


class Collector:
    """A TCP listener on loopback that keeps every byte each connection sends."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received = bytearray()
        self.connections = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn:
            while chunk := conn.recv(65536):
                with self._lock:
                    self.received += chunk

    def messages(self) -> list[bytes]:
        with self._lock:
            return split_octet_counted(bytes(self.received))

    def close(self) -> None:
        self.server.close()


class Rsyslog:
    """rsyslogd in the foreground: ``tcp_port`` plain, ``tls_port`` over TLS (the server
    certificate of ``pki``, client certificates from its CA required), ``udp_port``; what
    it receives with MSGID IHE+RFC-3881 goes to ``received``, one JSON line each."""

    def __init__(self, folder: Path, pki: Pki) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.tcp_port, self.tls_port, self.udp_port = free_port(), free_port(), free_port()
        self.received = folder / "received.jsonl"
        self.conf = folder / "rsyslog.conf"
        self.pidfile = folder / "rsyslogd.pid"
        self.log = folder / "rsyslogd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf.write_text(f"""
global(workDirectory="{folder}" maxMessageSize="64k"
       parser.escapeControlCharactersOnReceive="off"
       defaultNetstreamDriverCAFile="{pki.ca}"
       defaultNetstreamDriverCertFile="{pki.server.cert}"
       defaultNetstreamDriverKeyFile="{pki.server.key}")
module(load="imtcp")
module(load="imudp")
input(type="imtcp" address="127.0.0.1" port="{self.tcp_port}")
input(type="imtcp" address="127.0.0.1" port="{self.tls_port}" streamDriver.name="ossl"
      streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
input(type="imudp" address="127.0.0.1" port="{self.udp_port}")
template(name="audit" type="list") {{
  constant(value="{{\\"pri\\":\\"")      property(name="pri")
  constant(value="\\",\\"version\\":\\"") property(name="protocol-version")
  constant(value="\\",\\"msgid\\":\\"")   property(name="msgid")
  constant(value="\\",\\"app\\":\\"")     property(name="app-name")
  constant(value="\\",\\"procid\\":\\"")  property(name="procid")
  constant(value="\\",\\"host\\":\\"")    property(name="hostname")
  constant(value="\\",\\"raw\\":\\"")     property(name="rawmsg" format="json")
  constant(value="\\"}}\\n")
}}
if $msgid == "IHE+RFC-3881" then {{
  action(type="omfile" file="{self.received}" template="audit")
  stop
}}
action(type="omfile" file="{self.log}")
""")

    def start(self) -> None:
        with open(self.folder / "stderr.log", "ab") as stderr:
            self.proc = subprocess.Popen(
                [str(RSYSLOGD), "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
                stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 20
        for port in (self.tcp_port, self.tls_port):
            while True:
                assert self.proc.poll() is None, (self.folder / "stderr.log").read_text()
                try:
                    socket.create_connection(("127.0.0.1", port), 0.5).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "rsyslogd does not listen"
                    time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def messages(self) -> list[dict[str, str]]:
        """What rsyslogd wrote so far: its reading of each header, and ``raw`` (the whole
        SYSLOG-MSG as received)."""
        if not self.received.exists():
            return []
        lines = self.received.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]
