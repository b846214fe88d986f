"""Sending HL7 over MLLP and reading the acknowledgements."""

from __future__ import annotations

from broker.hl7.mllp import MllpClient


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
