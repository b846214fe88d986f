"""PostgreSQL under the writer: one connection per broker, a transaction per batch; a commit
is durable when it returns (the server's ``synchronous_commit``)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import errors

from broker.config.checks import safe_url
from broker.store.dialect import Dialect
from broker.store.postgres.connection import PgConnection, connect
from broker.store.postgres.dialect import POSTGRES
from broker.store.postgres.schema import migrate
from broker.store.writer import BatchWriter

#: aborted because of another transaction: run it again
_RETRY = (errors.DeadlockDetected, errors.SerializationFailure, errors.LockNotAvailable)


class PostgresBackend:
    """The write side of one PostgreSQL database."""

    dialect: Dialect = POSTGRES
    durable_commit = True

    def __init__(self, url: str, *, connect_timeout: float = 5.0, node: str = "") -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self.node = node
        self.description = safe_url(url)
        self._conn: PgConnection | None = None
        self._pipeline: contextlib.AbstractContextManager[Any] | None = None

    def open(self) -> PgConnection:
        conn = connect(self.url, connect_timeout=self.connect_timeout,
                       application_name=f"mwl-broker writer {self.node}".strip())
        try:
            migrate(conn, self.node)
        except BaseException:
            conn.raw.close()
            raise
        self._conn = conn
        return conn

    def begin(self, conn: PgConnection) -> Callable[[], float]:
        """Open the batch's transaction in pipeline mode: a statement whose result is not read
        (a lock, the message log row) costs no round trip of its own. The database's clock
        is read once, when a job first asks for the time (an HL7 job brings its own: its
        message's reception time)."""
        self._pipeline = conn.raw.pipeline()
        conn.pipeline = self._pipeline.__enter__()
        read: list[float] = []

        def clock() -> float:
            if not read:
                row = conn.execute("SELECT " + POSTGRES.now()).fetchone()
                read.append(float(row[0]) if row else time.time())
            return read[0]
        return clock

    def commit(self, conn: PgConnection) -> None:
        conn.raw.commit()
        self._end_pipeline(conn)

    def rollback(self, conn: PgConnection) -> None:
        self._end_pipeline(conn, failed=True)
        if not conn.raw.closed:
            conn.raw.rollback()

    def _end_pipeline(self, conn: PgConnection, failed: bool = False) -> None:
        pipeline, self._pipeline, conn.pipeline = self._pipeline, None, None
        if pipeline is None:
            return
        if failed:
            with contextlib.suppress(Exception):  # the error that failed the batch is raised
                pipeline.__exit__(RuntimeError, RuntimeError("rolled back"), None)
        else:
            pipeline.__exit__(None, None, None)

    def close(self, conn: PgConnection) -> None:
        self._pipeline = conn.pipeline = None
        conn.raw.close()

    def classify(self, exc: BaseException) -> str:
        if isinstance(exc, _RETRY):
            return "retry"
        if isinstance(exc, errors.IntegrityError):
            return "conflict"
        if isinstance(exc, psycopg.Error):
            conn = self._conn
            if conn is None or conn.raw.closed or conn.raw.broken:
                return "lost"
            return "database"
        return "job"

    def sync(self) -> None:
        """Nothing: a PostgreSQL COMMIT is durable when it returns."""

    def upkeep(self, stop: threading.Event, commits: Callable[[], int]) -> None:
        """Nothing to maintain (autovacuum runs in the server)."""
        stop.wait()


class PostgresWriter(BatchWriter):
    """The writer of one broker on a shared PostgreSQL database: ``connections`` threads,
    each with a connection of its own, take batches from one queue."""

    def __init__(self, url: str, *, max_batch: int = 64, poll_ms: float = 0.0,
                 connect_timeout: float = 5.0, node: str = "", connections: int = 1) -> None:
        backends = tuple(PostgresBackend(url, connect_timeout=connect_timeout, node=node)
                         for _ in range(max(1, connections)))
        self.postgres = backends[0]
        super().__init__(backends[0], max_batch=max_batch, poll_ms=poll_ms, more=backends[1:])
