"""HL7 ingest CPU in one process, without sockets: ORMs through the real Ingestor and the
real SQLite writer, CONCURRENCY at a time; CPU of the event-loop thread and of the writer
thread per ORM (best and median of ROUNDS), then parse and map_message alone.

    python benchmarks/ingest_cpu.py [N] [CONCURRENCY] [ROUNDS]     # 6000 50 6

Thread CPU clocks, so other load on the machine inflates but rarely deflates a round: compare
the best rounds of checkouts run alternately. Works from an older checkout too (copy it in).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.config import Settings
from broker.hl7.message import parse
from broker.mapping.engine import map_message
from broker.mapping.holder import MappingHolder

try:
    from broker.flows.hl7_in import Ingestor
    from tests.support.samples import order
except ImportError:  # a checkout before the redesign (#12)
    from broker.ingest import Ingestor  # type: ignore[no-redef]
    from broker.samples import order  # type: ignore[no-redef]


def writer_of(settings: Settings) -> Any:
    try:
        from broker.store.factory import open_store
    except ImportError:  # before the store had an interface
        from broker.store.writer import Writer  # type: ignore[attr-defined]
        db = settings.database
        return Writer(db.path, synchronous=db.synchronous, busy_timeout_ms=db.busy_timeout_ms,
                      max_batch=db.max_batch, poll_ms=db.writer_poll_ms)
    return open_store(settings.database).writer


def main(n: int, concurrency: int, rounds: int) -> None:
    settings = Settings()
    with tempfile.TemporaryDirectory() as tmp:
        settings.database.path = f"{tmp}/broker.sqlite"
        writer = writer_of(settings)
        writer.start()
        thread = next(t for t in threading.enumerate() if t.name == "store-writer")
        assert thread.ident is not None
        clock = time.pthread_getcpuclockid(thread.ident)
        mappings = MappingHolder(settings.mappings.directory)
        ingestor = Ingestor(writer, mappings, settings.hl7, settings.mllp)
        raws = [order(70_000_000 + k).encode() for k in range(n + 500)]

        async def send(batch: list[bytes]) -> None:
            queue = list(batch)

            async def one_sender() -> None:
                while queue:
                    outcome = await ingestor.handle(queue.pop(), "127.0.0.1:4000")
                    assert outcome.code == "AA", outcome.ack[:200]

            await asyncio.gather(*(one_sender() for _ in range(concurrency)))

        asyncio.run(send(raws[:500]))  # warm-up
        per = n // rounds
        loop_ms, writer_ms = [], []
        for r in range(rounds):
            m0, w0 = time.thread_time(), time.clock_gettime(clock)
            asyncio.run(send(raws[500 + r * per: 500 + (r + 1) * per]))
            m1, w1 = time.thread_time(), time.clock_gettime(clock)
            loop_ms.append(1000 * (m1 - m0) / per)
            writer_ms.append(1000 * (w1 - w0) / per)
        writer.stop()
        message = parse(raws[0].decode())
        parse_us, map_us = [], []
        for _ in range(rounds):
            c0 = time.thread_time()
            for _ in range(1000):
                parse(raws[1].decode())
            c1 = time.thread_time()
            for _ in range(1000):
                map_message(message, mappings(), [])
            c2 = time.thread_time()
            parse_us.append(1000 * (c1 - c0))
            map_us.append(1000 * (c2 - c1))
    med = statistics.median
    print(f"{os.getcwd()}: ms/ORM event loop {min(loop_ms):.3f} (median {med(loop_ms):.3f}), "
          f"writer {min(writer_ms):.3f} (median {med(writer_ms):.3f}); parse {min(parse_us):.1f} "
          f"us, map_message {min(map_us):.1f} us (median {med(map_us):.1f}); "
          f"{rounds} x {per} ORMs, {concurrency} at a time")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:4]]
    main(*(args + [6000, 50, 6][len(args):]))
