"""``send`` and ``receive``: HL7 over MLLP from the command line, as a sender and as the RIS."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path


def split_messages(data: bytes) -> list[bytes]:
    """Messages of a file: MLLP frames, or text with one message per MSH line.

    Line ends (LF, CR LF) become the segment separator CR; otherwise the bytes are sent as
    they are in the file.
    """
    if b"\x0b" in data:
        parts = [p.split(b"\x1c")[0] for p in data.split(b"\x0b")[1:]]
    else:
        text = data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
        starts = [i for i in range(len(text)) if text.startswith(b"MSH", i)
                  and (i == 0 or text[i - 1 : i] == b"\r")]
        parts = [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]
    out = []
    for part in parts:
        part = part.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
        while part.endswith(b"\r\r"):
            part = part[:-1]
        if part.strip():
            out.append(part)
    return out


def _inputs(target: str) -> Iterator[tuple[str, bytes]]:
    if target == "-":
        yield "<stdin>", sys.stdin.buffer.read()
        return
    path = Path(target)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for file in files:
        yield str(file), file.read_bytes()


def cmd_send(args: argparse.Namespace) -> int:
    from broker.config import TlsSettings
    from broker.hl7.ack import ack_code_of
    from broker.hl7.mllp import MllpClient, MllpError
    from broker.net.tls import client_context

    tls = TlsSettings(enabled=bool(args.tls or args.tls_ca or args.tls_cert or args.tls_key),
                      ca_file=args.tls_ca or "", cert_file=args.tls_cert or "",
                      key_file=args.tls_key or "")
    ssl_context = client_context(tls, "send --tls")

    async def run() -> int:
        failures = 0
        client = MllpClient(args.host, args.port, timeout=args.timeout, ssl_context=ssl_context)
        try:
            for target in args.files:
                for name, data in _inputs(target):
                    for message in split_messages(data):
                        try:
                            answer = await client.send(message)
                        except (MllpError, OSError, TimeoutError) as exc:
                            print(f"{name}: no acknowledgement: {exc}", file=sys.stderr)
                            return 3
                        code, control = ack_code_of(answer.decode("latin-1"))
                        text = answer.decode("utf-8", errors="replace").replace("\r", "\n")
                        print(f"# {name}: {code} (MSA-2 {control})")
                        if not args.quiet:
                            print(text.rstrip("\n"))
                        if code not in ("AA", "CA"):
                            failures += 1
        finally:
            await client.close()
        return 1 if failures else 0

    return asyncio.run(run())


def cmd_receive(args: argparse.Namespace) -> int:
    from broker.cli.receiver import Receiver

    save = Path(args.save) if args.save else None
    if save is not None:
        try:
            save.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"mwl-broker listen: cannot save messages in {save}: {exc}", file=sys.stderr)
            return 2
    receiver = Receiver(args.host, args.port, answer=args.answer, count=args.count, save=save)
    try:
        asyncio.run(receiver.run())
    except OSError as exc:
        print(f"mwl-broker listen: cannot listen on {args.host}:{args.port}: {exc}",
              file=sys.stderr)
        return 2
    return 0
