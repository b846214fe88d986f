"""MLLP framing (0x0B message 0x1C 0x0D), an asyncio client, and frame helpers."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

from broker.net.tcp import acknowledge_now, no_delay

START = 0x0B
END = b"\x1c\r"
START_BYTE = b"\x0b"
FILLER = frozenset(b"\x00\r\n \t")
HEAD_BYTES = 4096


def frame(payload: bytes) -> bytes:
    return START_BYTE + payload + END


@dataclass(frozen=True, slots=True)
class Frame:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Garbage:
    """Bytes outside a frame that are not filler (NUL, CR, LF, blanks)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Oversize:
    """A frame grew past the limit; the connection must be answered AR and closed.

    ``head`` keeps the first bytes of the frame so the answer can be addressed.
    """

    size: int
    head: bytes = b""


Event = Frame | Garbage | Oversize


class Framer:
    """Incremental MLLP decoder: feed bytes, get frames; never buffers past ``max_frame``."""

    def __init__(self, max_frame: int = 1 << 20) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._in_frame = False
        self._scan_from = 0
        self.overflowed = False

    @property
    def pending(self) -> int:
        """Bytes held of an unfinished frame."""
        return len(self._buf) if self._in_frame else 0

    @property
    def in_frame(self) -> bool:
        """A start block arrived and its end block has not (yet)."""
        return self._in_frame and not self.overflowed

    def feed(self, data: bytes) -> list[Event]:
        if self.overflowed:
            return []
        events: list[Event] = []
        self._buf += data
        while self._buf:
            if not self._in_frame:
                start = self._buf.find(START)
                junk = bytes(self._buf if start < 0 else self._buf[:start])
                if junk and not all(b in FILLER for b in junk):
                    events.append(Garbage(junk))
                if start < 0:
                    self._buf.clear()
                    break
                del self._buf[: start + 1]
                self._in_frame = True
                self._scan_from = 0
            end = self._buf.find(END, self._scan_from)
            if end < 0:
                held = len(self._buf) - (1 if self._buf.endswith(b"\x1c") else 0)
                if held > self.max_frame:
                    self.overflowed = True
                    events.append(Oversize(len(self._buf), bytes(self._buf[:HEAD_BYTES])))
                    self._buf.clear()
                    break
                self._scan_from = max(0, len(self._buf) - 1)
                break
            if end > self.max_frame:
                self.overflowed = True
                events.append(Oversize(end, bytes(self._buf[: min(end, HEAD_BYTES)])))
                self._buf.clear()
                break
            payload = bytes(self._buf[:end])
            restart = payload.rfind(START_BYTE)
            if restart >= 0:
                events.append(Garbage(payload[: restart + 1]))
                payload = payload[restart + 1 :]
            events.append(Frame(payload))
            del self._buf[: end + 2]
            self._in_frame = False
        return events


class MllpError(ConnectionError):
    """The peer closed, timed out or answered with something that is not a frame."""


class MllpClient:
    """A persistent MLLP connection that sends a message and waits for its answer."""

    def __init__(self, host: str, port: int, *, timeout: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None, max_frame: int = 1 << 24,
                 server_hostname: str = "") -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.ssl_context = ssl_context
        #: the name checked in the server's certificate (default: ``host``)
        self.server_hostname = server_hostname
        self._framer = Framer(max_frame)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._frames: list[bytes] = []

    async def connect(self) -> None:
        if self.ssl_context is None:
            opening = asyncio.open_connection(self.host, self.port)
        else:
            opening = asyncio.open_connection(self.host, self.port, ssl=self.ssl_context,
                                              server_hostname=self.server_hostname or self.host)
        async with asyncio.timeout(self.timeout):
            reader, writer = await opening
        no_delay(writer.get_extra_info("socket"))
        self._reader, self._writer = reader, writer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await self._writer.wait_closed()
            self._writer = self._reader = None

    async def __aenter__(self) -> MllpClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, payload: bytes) -> bytes:
        """Send one message and return the payload of the next frame received."""
        if self._writer is None:
            await self.connect()
        assert self._writer is not None
        self._writer.write(frame(payload))
        await self._writer.drain()
        return await self.receive()

    async def receive(self) -> bytes:
        assert self._reader is not None
        while not self._frames:
            async with asyncio.timeout(self.timeout):
                data = await self._reader.read(65536)
            if not data:
                raise MllpError(f"{self.host}:{self.port} closed the connection")
            assert self._writer is not None
            acknowledge_now(self._writer.get_extra_info("socket"))  # a receiver's ACK in pieces
            for event in self._framer.feed(data):
                if isinstance(event, Frame):
                    self._frames.append(event.payload)
                elif isinstance(event, Oversize):
                    raise MllpError(f"answer from {self.host}:{self.port} exceeds frame limit")
        return self._frames.pop(0)
