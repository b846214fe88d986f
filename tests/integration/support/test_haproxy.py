"""The throwaway HAProxy of the HA tests (tests/support/haproxy.py): the real haproxy in front
of two asyncio echo servers on loopback, each with an HTTP health port."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from tests.support import throwaway
from tests.support.haproxy import Backend, HAProxy, Server


class EchoBackend:
    """Echoes each line as ``<name>:<line>``; its health port answers ``GET /readyz`` with 200
    while ``health`` is "ok", 503 when "503", nothing when "silent", and is closed when
    "closed"."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.health_port = 0
        self.health = "ok"
        self.checks: list[str] = []
        self._echo: asyncio.Server | None = None
        self._health: asyncio.Server | None = None

    async def start(self) -> None:
        self._echo = await asyncio.start_server(self._on_echo, "127.0.0.1", 0)
        self.port = self._echo.sockets[0].getsockname()[1]
        await self.open_health()

    async def open_health(self) -> None:
        self._health = await asyncio.start_server(self._on_health, "127.0.0.1",
                                                  self.health_port)
        self.health_port = self._health.sockets[0].getsockname()[1]

    async def set_health(self, state: str) -> None:
        self.health = state
        if state == "closed" and self._health is not None:
            self._health.close()
            await self._health.wait_closed()
            self._health = None
        elif state != "closed" and self._health is None:
            await self.open_health()

    async def stop(self) -> None:
        for server in (self._echo, self._health):
            if server is not None:
                server.close()
                await server.wait_closed()

    async def _on_echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(f"{self.name}:".encode() + line)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _on_health(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                         ) -> None:
        try:
            request = await reader.readline()
            while (await reader.readline()).strip():
                pass
            self.checks.append(request.decode().strip())
            if self.health == "silent":
                await reader.read()  # until haproxy gives up
                return
            status = "200 OK" if self.health == "ok" else "503 Service Unavailable"
            writer.write(f"HTTP/1.0 {status}\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


@pytest.fixture
async def echoes() -> AsyncIterator[tuple[EchoBackend, EchoBackend]]:
    a, b = EchoBackend("a"), EchoBackend("b")
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()


@pytest.fixture
async def proxy(echoes: tuple[EchoBackend, EchoBackend]) -> AsyncIterator[HAProxy]:
    a, b = echoes
    haproxy = HAProxy({"echo": None}, {"echo": Backend(
        [Server("127.0.0.1", a.port, a.health_port), Server("127.0.0.1", b.port, b.health_port)],
        check_path="/readyz")})
    await asyncio.to_thread(haproxy.start)
    try:
        for server in ("s1", "s2"):
            await asyncio.to_thread(haproxy.wait_status, "echo", server, "UP")
        yield haproxy
    finally:
        await asyncio.to_thread(haproxy.close)


async def _who(port: int) -> str:
    """The backend that serves a new connection through the proxy."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"ping\n")
        answer = await asyncio.wait_for(reader.readline(), 5)
        assert answer.endswith(b":ping\n"), answer
        return answer.split(b":")[0].decode()
    finally:
        writer.close()
        await writer.wait_closed()


async def test_connections_are_balanced_and_checked_on_the_health_ports(
        echoes: tuple[EchoBackend, EchoBackend], proxy: HAProxy) -> None:
    served = Counter([await _who(proxy.port("echo")) for _ in range(10)])
    assert served == {"a": 5, "b": 5}
    a, b = echoes
    for backend in (a, b):
        assert backend.checks, "no health check reached the health port"
        assert set(backend.checks) == {"GET /readyz HTTP/1.0"}


@pytest.mark.parametrize("failure", ["closed", "503", "silent"])
async def test_a_backend_whose_health_fails_is_taken_out_and_back(
        echoes: tuple[EchoBackend, EchoBackend], proxy: HAProxy, failure: str) -> None:
    a, _b = echoes
    port = proxy.port("echo")
    # a session to each backend, open while a's health fails
    sessions = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    served_by = []
    for reader, writer in sessions:
        writer.write(b"hello\n")
        served_by.append((await asyncio.wait_for(reader.readline(), 5)).split(b":")[0])
    assert sorted(served_by) == [b"a", b"b"]
    await a.set_health(failure)
    await asyncio.to_thread(proxy.wait_status, "echo", "s1", "DOWN")
    assert proxy.server_status()["echo", "s2"] == "UP"
    assert {await _who(port) for _ in range(6)} == {"b"}
    # the session on a was cut when a was marked down; the one on b goes on
    for (reader, writer), name in zip(sessions, served_by, strict=True):
        if name == b"a":
            assert await asyncio.wait_for(reader.read(), 5) == b""
        else:
            writer.write(b"still\n")
            assert await asyncio.wait_for(reader.readline(), 5) == b"b:still\n"
        writer.close()
    await a.set_health("ok")
    await asyncio.to_thread(proxy.wait_status, "echo", "s1", "UP")
    assert {await _who(port) for _ in range(4)} == {"a", "b"}


async def test_a_server_taken_out_by_hand(proxy: HAProxy) -> None:
    await asyncio.to_thread(proxy.disable, "echo", "s2")
    await asyncio.to_thread(proxy.wait_status, "echo", "s2", "MAINT")
    assert {await _who(proxy.port("echo")) for _ in range(4)} == {"a"}
    await asyncio.to_thread(proxy.enable, "echo", "s2")
    await asyncio.to_thread(proxy.wait_status, "echo", "s2", "UP")


def test_close_stops_haproxy_and_removes_its_folder() -> None:
    port = throwaway.free_port()
    haproxy = HAProxy({"svc": None}, {"svc": Backend([("127.0.0.1", port)])})
    haproxy.start()
    assert haproxy.proc is not None
    pid = haproxy.proc.pid
    assert "bind 127.0.0.1:" in haproxy.config_path.read_text()
    with socket.create_connection(("127.0.0.1", haproxy.port("svc")), timeout=2):
        pass
    haproxy.close()
    assert not throwaway.is_alive(pid)
    assert not haproxy.folder.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", haproxy.port("svc")), timeout=2)


def test_a_bad_configuration_is_refused_before_the_start() -> None:
    haproxy = HAProxy({"svc": None}, {"svc": Backend([("127.0.0.1", 1)], balance="nonsense")})
    try:
        with pytest.raises(ValueError, match="refuses its configuration"):
            haproxy.start()
        assert not haproxy.running
    finally:
        haproxy.close()
