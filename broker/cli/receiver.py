"""``mwl-broker listen``: an MLLP listener that prints (and, asked to, saves) each HL7 message
and acknowledges it.

It plays the RIS end of the broker's outbound messages (status updates, completion notices)
while a site is set up or a mapping is tried, like dcm4che's ``hl7rcv``.
"""

from __future__ import annotations

import asyncio
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from broker.hl7 import charset
from broker.hl7.ack import Hl7Error, build_ack
from broker.hl7.message import ParseError, parse
from broker.hl7.mllp import Frame, Framer, frame

#: what a saved message's file name keeps of its control ID
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass
class Receiver:
    """Prints every message to ``out`` (and saves it in ``save``, when given), answers
    ``answer`` and stops after ``count`` (0: never)."""

    host: str = "127.0.0.1"
    port: int = 2576
    answer: str = "AA"
    count: int = 0
    out: TextIO = field(default_factory=lambda: sys.stdout)
    save: Path | None = None
    received: int = 0
    _done: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _open: set[asyncio.StreamWriter] = field(default_factory=set)

    async def run(self) -> None:
        """Listen until ``count`` messages have arrived (for ever when it is 0)."""
        await self.start()
        await self.wait()

    async def start(self) -> None:
        """Listen; ``port`` becomes the bound one (when 0 asked for any free port)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        print(f"# listening for HL7 over MLLP on {self.host}:{self.port}, answering "
              f"{self.answer}", file=sys.stderr, flush=True)

    async def wait(self) -> None:
        """Until ``count`` messages have been answered; then stop listening."""
        assert self._server is not None
        try:
            await self._done.wait()
        finally:
            self._server.close()
            for writer in list(self._open):
                writer.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source = f"{peer[0]}:{peer[1]}" if peer else "?"
        framer = Framer()
        self._open.add(writer)
        try:
            while not self._done.is_set() and (data := await reader.read(65536)):
                for item in framer.feed(data):
                    if isinstance(item, Frame):
                        writer.write(frame(self._answer(item.payload, source)))
                        await writer.drain()
                        if self.count and self.received >= self.count:
                            self._done.set()
        except ConnectionError:
            pass
        finally:
            self._open.discard(writer)
            writer.close()

    def _answer(self, payload: bytes, source: str) -> bytes:
        """Print (and save) one message and build its acknowledgement (AR when it cannot be
        parsed)."""
        self.received += 1
        try:
            decoded = charset.decode(payload)
            message = parse(decoded.text, decoded.codec)
        except (charset.CharsetError, ParseError) as exc:
            saved = self._save(payload, "unreadable")
            text = payload.decode("utf-8", errors="replace")
            self._print(f"# from {source}: unreadable ({exc}), answered AR{saved}", text)
            ack = build_ack("AR", None, errors=(Hl7Error(100, str(exc), "MSH"),))
            return ack.encode("ascii", errors="replace")
        saved = self._save(payload, message.control_id)
        self._print(f"# from {source}: {message.message_type} control ID {message.control_id} "
                    f"({decoded.codec}), answered {self.answer}{saved}", decoded.text)
        return build_ack(self.answer, message).encode(decoded.codec, errors="replace")

    def _save(self, payload: bytes, control_id: str) -> str:
        """The message's bytes as received, in ``save`` as NNNNNN-CONTROLID.hl7 (the control
        ID cut to letters, digits, '.', '_' and '-'); the note for its printed header."""
        if self.save is None:
            return ""
        name = f"{self.received:06d}-{_SAFE.sub('_', control_id)[:64] or 'none'}.hl7"
        path = self.save / name
        path.write_bytes(payload)
        return f", saved as {path}"

    def _print(self, head: str, text: str) -> None:
        print(head, file=self.out)
        print(text.replace("\r", "\n").rstrip("\n"), file=self.out)
        print(file=self.out, flush=True)
