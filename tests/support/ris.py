"""A RIS playing the receiving end of the broker's HL7: a real MLLP listener on loopback."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from ssl import SSLContext

from broker.hl7.charset import codec_for, declared_charset
from broker.hl7.mllp import Frame, Framer, frame


@dataclass
class Ris:
    """``mode``: AA (accept), AE (refuse), wrong_msa2 (acknowledge another ID), late_ack
    (first a stray acknowledgement of another ID, then the right one), silent (never answer),
    cut (send half an acknowledgement and close). Change it at any time."""

    mode: str = "AA"
    received: list[str] = field(default_factory=list)
    #: the bytes of each message received, as they came
    raw: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self, port: int = 0, ssl: SSLContext | None = None) -> Ris:
        """Listen on loopback (over TLS with ``ssl``)."""
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port, ssl=ssl)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = Framer()
        try:
            while data := await reader.read(65536):
                for item in framer.feed(data):
                    if isinstance(item, Frame):
                        self.raw.append(item.payload)
                        await self._answer(_text(item.payload), writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _answer(self, message: str, writer: asyncio.StreamWriter) -> None:
        self.received.append(message)
        control = message.split("\r")[0].split("|")[9]
        mode = self.mode
        if mode == "silent":
            return
        if mode == "cut":
            writer.write(b"\x0bMSH|^~\\&|RIS|HOSP|||20261122||ACK|1|P|2.3.1\rMSA|A")
            await writer.drain()
            writer.close()
            return
        if mode == "late_ack":
            writer.write(frame(_ack("AA", "AN-EARLIER-ONE", len(self.received)).encode()))
        code = "AE" if mode == "AE" else "AA"
        msa2 = "SOMETHING-ELSE" if mode == "wrong_msa2" else control
        writer.write(frame(_ack(code, msa2, len(self.received)).encode()))
        await writer.drain()


def _ack(code: str, msa2: str, number: int) -> str:
    return (f"MSH|^~\\&|RIS|HOSP|MWLBROKER|RADIOLOGY|20261122||ACK^O01|R{number}"
            f"|P|2.3.1\rMSA|{code}|{msa2}|{'order unknown here' if code == 'AE' else ''}\r")


def _text(raw: bytes) -> str:
    """A message read in the character set its MSH-18 declares (ASCII when none)."""
    return raw.decode(codec_for(declared_charset(raw)) or "utf-8", errors="replace")


def oru(ris: Ris) -> list[str]:
    """The ORU completion notices the RIS received."""
    return [m for m in ris.received if segment(m, "MSH")[9].startswith("ORU")]


def obx(message: str) -> dict[str, str]:
    """OBX-5 of each OBX, by the code of its OBX-3."""
    values = {}
    for line in message.split("\r"):
        if line.startswith("OBX|"):
            fields = line.split("|")
            values[fields[3].split("^")[0]] = fields[5]
    return values


def segment(message: str, name: str, index: int = 0) -> list[str]:
    found = [s for s in message.split("\r") if s.startswith(name + "|")]
    fields = found[index].split("|")
    return ["", *fields[1:]] if name != "MSH" else ["", "|", *fields[1:]]
