"""PostgreSQL under the writer: one connection per broker, a transaction per batch; a commit
is durable when it returns (the server's ``synchronous_commit``)."""

from __future__ import annotations

import threading
from collections.abc import Callable

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

    def begin(self, conn: PgConnection) -> float | None:
        """psycopg opens the transaction with this first statement: the database's clock."""
        row = conn.execute("SELECT " + POSTGRES.now()).fetchone()
        return float(row[0]) if row else None

    def commit(self, conn: PgConnection) -> None:
        conn.raw.commit()

    def rollback(self, conn: PgConnection) -> None:
        if not conn.raw.closed:
            conn.raw.rollback()

    def close(self, conn: PgConnection) -> None:
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
    """The writer of one broker on a shared PostgreSQL database."""

    def __init__(self, url: str, *, max_batch: int = 64, poll_ms: float = 0.5,
                 connect_timeout: float = 5.0, node: str = "") -> None:
        self.postgres = PostgresBackend(url, connect_timeout=connect_timeout, node=node)
        super().__init__(self.postgres, max_batch=max_batch, poll_ms=poll_ms)
