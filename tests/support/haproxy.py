"""A throwaway HAProxy (the real ``/usr/sbin/haproxy``) in TCP mode on 127.0.0.1, in front of
several brokers in the HA tests: one frontend per name (MLLP, DICOM, …), each forwarding to the
backend of the same name, round robin, with health checks short enough for failover tests
(a server is out two failed checks of 500 ms after its health port stops answering, back in
at the first good one).

A health check is HTTP ``GET <check_path>`` (e.g. ``/readyz`` of each broker's admin port)
when the backend names a path, else a TCP connect; on the server's ``check_port`` when it
names one, else on its service port. Sessions of a server marked down are cut
(``on-marked-down shutdown-sessions``), so the clients of a dead broker reconnect at once.

The admin socket (``stats.sock`` in the folder) answers ``command()``, ``server_status()`` and
``wait_status()``, and can take a server out by hand (``disable``/``enable``).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tests.support import throwaway

HAPROXY = Path("/usr/sbin/haproxy")
_KIND = "haproxy"


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    #: where its health check goes (None: the service port)
    check_port: int | None = None
    #: its name in the stats (None: s1, s2, … in order)
    name: str | None = None


@dataclass(frozen=True)
class Backend:
    servers: Sequence[Server | tuple[str, int]]
    #: HTTP GET of this path must answer 200 (None: a TCP connect is the check)
    check_path: str | None = None
    balance: str = "roundrobin"
    #: extra lines for the backend section (e.g. "hash-type consistent")
    extra: Sequence[str] = field(default_factory=tuple)

    def named_servers(self) -> list[tuple[str, Server]]:
        named = []
        for i, entry in enumerate(self.servers, 1):
            server = entry if isinstance(entry, Server) else Server(*entry)
            named.append((server.name or f"s{i}", server))
        return named


@dataclass(frozen=True)
class Checks:
    """Health check timing: ``inter`` between checks of an up server, ``fall`` failures to
    take it out, ``rise`` successes to bring it back."""
    inter_ms: int = 500
    fastinter_ms: int = 250
    downinter_ms: int = 500
    fall: int = 2
    rise: int = 1
    timeout_ms: int = 1000


def _haproxy_pids(folder: Path) -> list[int]:
    try:
        return [int((folder / "haproxy.pid").read_text().split()[0])]
    except (OSError, ValueError, IndexError):
        return []


class _Guard:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None

    def __call__(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


class HAProxy:
    """``frontends`` maps a name to the port it listens on (None: a free port, see
    ``port(name)``); ``backends`` gives the servers behind each name."""

    def __init__(self, frontends: Mapping[str, int | None], backends: Mapping[str, Backend], *,
                 checks: Checks = Checks(), connect_timeout_ms: int = 2000,
                 idle_timeout_s: int = 3600, base: Path | None = None) -> None:
        if set(frontends) != set(backends):
            raise ValueError(f"frontends {sorted(frontends)} and backends {sorted(backends)} "
                             "must have the same names")
        self.ports = {name: port or throwaway.free_port() for name, port in frontends.items()}
        self.backends = dict(backends)
        self.checks = checks
        self.connect_timeout_ms = connect_timeout_ms
        self.idle_timeout_s = idle_timeout_s
        throwaway.reap_abandoned(_KIND, _haproxy_pids, base)
        self.folder = throwaway.make_folder(_KIND, base)
        self._guard = _Guard(self.folder)
        self._finalizer = weakref.finalize(self, self._guard)
        self.config_path = self.folder / "haproxy.cfg"
        self.log_path = self.folder / "haproxy.log"
        self.stats_socket = self.folder / "stats.sock"

    def port(self, frontend: str) -> int:
        return self.ports[frontend]

    def config(self) -> str:
        c = self.checks
        lines = [
            "global",
            "    maxconn 4000",
            "    nbthread 1",
            f"    stats socket {self.stats_socket} mode 600 level admin",
            "    log stdout format raw local0 info",
            "defaults",
            "    mode tcp",
            "    log global",
            "    option tcplog",
            "    option redispatch",
            "    retries 2",
            f"    timeout connect {self.connect_timeout_ms}ms",
            f"    timeout client {self.idle_timeout_s}s",
            f"    timeout server {self.idle_timeout_s}s",
            f"    timeout check {c.timeout_ms}ms",
            f"    default-server inter {c.inter_ms}ms fastinter {c.fastinter_ms}ms "
            f"downinter {c.downinter_ms}ms fall {c.fall} rise {c.rise} "
            "on-marked-down shutdown-sessions",
        ]
        for name, port in self.ports.items():
            lines += [f"frontend {name}", f"    bind 127.0.0.1:{port}",
                      f"    default_backend {name}"]
        for name, backend in self.backends.items():
            lines += [f"backend {name}", f"    balance {backend.balance}"]
            if backend.check_path is not None:
                lines += ["    option httpchk",
                          f"    http-check send meth GET uri {backend.check_path}",
                          "    http-check expect status 200"]
            lines += [f"    {line}" for line in backend.extra]
            for server_name, server in backend.named_servers():
                check = " check" + (f" port {server.check_port}" if server.check_port else "")
                lines.append(f"    server {server_name} {server.host}:{server.port}{check}")
        return "\n".join(lines) + "\n"

    # -- life cycle ------------------------------------------------------------------------

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self._guard.proc

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Write the configuration, check it, start haproxy in the foreground and wait until
        its admin socket answers (its frontends are bound before that)."""
        if self.running:
            return
        self.config_path.write_text(self.config())
        checked = subprocess.run([str(HAPROXY), "-c", "-q", "-f", str(self.config_path)],
                                 capture_output=True, text=True, check=False)
        if checked.returncode != 0:
            raise ValueError(f"haproxy refuses its configuration:\n{checked.stdout}"
                             f"{checked.stderr}\n{self.config()}")
        with open(self.log_path, "ab") as log:
            self._guard.proc = subprocess.Popen(
                [str(HAPROXY), "-db", "-f", str(self.config_path)], stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, cwd=self.folder, start_new_session=True)
        # for the clean-up after a killed test run (haproxy -db writes no pidfile)
        (self.folder / "haproxy.pid").write_text(f"{self._guard.proc.pid}\n")
        deadline = time.monotonic() + timeout
        while True:
            proc = self.proc
            assert proc is not None
            if proc.poll() is not None:
                raise RuntimeError(f"haproxy exited with {proc.returncode}:\n{self.log_text()}")
            try:
                self.command("show info")
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise TimeoutError(f"haproxy not up after {timeout}s:\n{self.log_text()}"
                                       ) from None
                time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """Hard stop (SIGTERM: open sessions are closed)."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._guard.proc = None

    def kill(self) -> None:
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            self._guard.proc = None

    def close(self) -> None:
        """Stop haproxy and remove its folder."""
        try:
            self.stop()
        finally:
            self._finalizer()

    def __enter__(self) -> HAProxy:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- the admin socket ------------------------------------------------------------------

    def command(self, line: str, timeout: float = 5.0) -> str:
        """One command on the admin socket (``show stat``, ``disable server b/s``, …)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.stats_socket))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def server_status(self) -> dict[tuple[str, str], str]:
        """(backend, server) → its status: UP, DOWN, MAINT, "UP 1/2" while going down, …"""
        lines = self.command("show stat").splitlines()
        if not lines or not lines[0].startswith("# "):
            raise RuntimeError(f"unexpected answer to show stat: {lines[:3]}")
        header = lines[0][2:].split(",")
        status: dict[tuple[str, str], str] = {}
        for line in lines[1:]:
            if not line:
                continue
            row = dict(zip(header, line.split(","), strict=False))
            if row["svname"] not in ("FRONTEND", "BACKEND"):
                status[row["pxname"], row["svname"]] = row["status"]
        return status

    def wait_status(self, backend: str, server: str, status: str, timeout: float = 10.0) -> None:
        """Wait until ``server`` of ``backend`` has ``status`` (UP, DOWN, MAINT)."""
        deadline = time.monotonic() + timeout
        seen = ""
        while True:
            seen = self.server_status().get((backend, server), "(no such server)")
            if seen == status:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{backend}/{server} is {seen!r}, not {status!r}, "
                                   f"after {timeout}s")
            time.sleep(0.05)

    def disable(self, backend: str, server: str) -> None:
        """Take a server out by hand (MAINT); its sessions are not cut."""
        self._admin(f"disable server {backend}/{server}")

    def enable(self, backend: str, server: str) -> None:
        self._admin(f"enable server {backend}/{server}")

    def _admin(self, line: str) -> None:
        answer = self.command(line).strip()
        if answer:
            raise RuntimeError(f"haproxy refused {line!r}: {answer}")

    def __repr__(self) -> str:
        return f"<HAProxy {self.ports} {'running' if self.running else 'stopped'}>"

