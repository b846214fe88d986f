"""HL7 ingest CPU in one process, without sockets: ORMs through the real Ingestor and the
real SQLite writer, CONCURRENCY at a time; CPU of the event-loop thread and of the writer
thread per ORM (best and median of ROUNDS), then parse and map_message alone.

    python benchmarks/ingest_cpu.py [N] [CONCURRENCY] [ROUNDS]     # 6000 50 6
    python benchmarks/ingest_cpu.py --postgres [N] [CONCURRENCY] [ROUNDS]

``--postgres`` runs the PostgreSQL writer against a throwaway durable cluster
(tests/support/postgres.py) and also counts, per ORM, the statements the writer sent and
the server's CPU (its processes' /proc times).

Thread CPU clocks, so other load on the machine inflates but rarely deflates a round: compare
the best rounds of checkouts run alternately. Works from an older checkout too (copy it in).
"""

from __future__ import annotations

import asyncio
import contextlib
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


class StatementCounter:
    """Counts the statements the PostgreSQL connections send (execute / executemany rows)."""

    def __init__(self) -> None:
        from broker.store.postgres.connection import PgConnection
        self.count = 0
        execute, executemany = PgConnection.execute, PgConnection.executemany
        counter = self

        def counted_execute(conn: Any, sql: str, parameters: Any = ()) -> Any:
            counter.count += 1
            return execute(conn, sql, parameters)

        def counted_executemany(conn: Any, sql: str, parameters: Any) -> Any:
            rows = list(parameters)
            counter.count += len(rows)
            return executemany(conn, sql, rows)

        PgConnection.execute = counted_execute  # type: ignore[method-assign]
        PgConnection.executemany = counted_executemany  # type: ignore[method-assign]


def cpu_of(pids: list[int]) -> float:
    """User + system seconds of these processes (those still alive)."""
    total = 0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def main(n: int, concurrency: int, rounds: int, postgres: bool = False) -> None:
    settings = Settings()
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        settings.database.path = f"{tmp}/broker.sqlite"
        counter = cluster = None
        if postgres:
            from benchmarks.common import PG_BENCH_SETTINGS
            from tests.support.postgres import PostgresCluster
            cluster = stack.enter_context(PostgresCluster(PG_BENCH_SETTINGS, durable=True))
            settings.database.url = cluster.create_database("ingest_cpu")
            counter = StatementCounter()
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
        loop_ms, writer_ms, server_ms, statements = [], [], [], []
        for r in range(rounds):
            pids = cluster.processes() if cluster is not None else []
            s0, c0 = cpu_of(pids), counter.count if counter else 0
            m0, w0 = time.thread_time(), time.clock_gettime(clock)
            asyncio.run(send(raws[500 + r * per: 500 + (r + 1) * per]))
            m1, w1 = time.thread_time(), time.clock_gettime(clock)
            loop_ms.append(1000 * (m1 - m0) / per)
            writer_ms.append(1000 * (w1 - w0) / per)
            server_ms.append(1000 * (cpu_of(pids) - s0) / per)
            statements.append(((counter.count if counter else 0) - c0) / per)
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
    if postgres:
        print(f"postgresql: server CPU {min(server_ms):.3f} ms/ORM (median "
              f"{med(server_ms):.3f}), {med(statements):.2f} statements/ORM")


if __name__ == "__main__":
    pg = "--postgres" in sys.argv
    args = [int(a) for a in sys.argv[1:] if a != "--postgres"][:3]
    main(*(args + [6000, 50, 6][len(args):]), postgres=pg)
