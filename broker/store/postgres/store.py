"""The PostgreSQL store: several brokers on one database (docs/high-availability.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from broker.config import DatabaseSettings, RetentionSettings
from broker.config.checks import safe_url
from broker.logs import event
from broker.store.admin_queries import AdminReader
from broker.store.dialect import Dialect
from broker.store.errors import Conflict, StoreError
from broker.store.outbox_reader import OutboxReader
from broker.store.postgres.connection import AsyncPg, PgConnection, connect, read_errors
from broker.store.postgres.dialect import POSTGRES
from broker.store.postgres.readers import PostgresWorklistReader
from broker.store.postgres.schema import migrate
from broker.store.postgres.writer import PostgresWriter
from broker.store.purger import Purger
from broker.store.repo import OutboxRow, outbox_entries
from broker.store.unit_of_work import Job, UnitOfWork

T = TypeVar("T")
log = logging.getLogger("broker.store")


class PostgresStore:
    """One broker's view of a shared PostgreSQL database."""

    dialect: Dialect = POSTGRES
    backend = "postgresql"

    def __init__(self, settings: DatabaseSettings, node: str = "") -> None:
        self.settings = settings
        self.url = settings.url
        self.node = node
        self.description = safe_url(settings.url)
        self.writer = PostgresWriter(settings.url, max_batch=settings.max_batch,
                                     connect_timeout=settings.connect_timeout, node=node,
                                     connections=settings.writers)
        self._pool: ConnectionPool[Any] | None = None
        self._lock = threading.Lock()

    def pool(self) -> ConnectionPool[Any]:
        """The read connections (opened on first use; each in autocommit)."""
        with self._lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    self.url, min_size=1, max_size=max(1, self.settings.pool_size),
                    kwargs={"autocommit": True, "application_name":
                            f"mwl-broker reader {self.node}".strip(),
                            "connect_timeout": max(1, round(self.settings.connect_timeout))},
                    open=True, name="mwl-broker-readers",
                    reconnect_timeout=0)
            return self._pool

    @contextlib.contextmanager
    def read(self) -> Iterator[PgConnection | None]:
        """A pooled read connection (autocommit: each statement sees the latest commits)."""
        with read_errors(self.url), self.pool().connection(
                self.settings.connect_timeout) as raw:
            yield PgConnection(raw)

    def purger(self, retention: RetentionSettings) -> Purger:
        return Purger(self.read, self.writer, retention, POSTGRES, self.description)

    def dry_run(self) -> PostgresDryRun:
        return PostgresDryRun(self.url, self.settings.connect_timeout)

    async def outbox_reader(self) -> OutboxReader:
        return OutboxReader(AsyncPg(self.url, self.settings.connect_timeout,
                                    f"mwl-broker outbox {self.node}".strip()))

    def worklist_reader(self) -> PostgresWorklistReader:
        return PostgresWorklistReader(self.pool(), self.url, self.settings.connect_timeout)

    async def admin_reader(self) -> AdminReader:
        return AdminReader(AsyncPg(self.url, self.settings.connect_timeout,
                                   f"mwl-broker admin {self.node}".strip()), POSTGRES)

    def outbox_entries(self, state: str = "", limit: int = 100) -> list[OutboxRow]:
        with self.read() as conn:
            assert conn is not None
            return outbox_entries(conn, state, limit)

    async def listen(self, channel: str, callback: Callable[[], None]
                     ) -> Callable[[], Awaitable[None]]:
        """Call ``callback`` on each NOTIFY on ``channel`` (LISTEN on a connection of its
        own, opened again after PostgreSQL went away); returns what stops listening."""
        task = asyncio.create_task(self._listen(channel, callback), name=f"listen-{channel}")

        async def stop() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return stop

    async def _listen(self, channel: str, callback: Callable[[], None]) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                        self.url, autocommit=True,
                        connect_timeout=max(1, round(self.settings.connect_timeout)),
                        application_name=f"mwl-broker listen {self.node}".strip()) as conn:
                    await conn.execute(f"LISTEN {channel}")
                    callback()  # whatever was queued while not listening
                    async for _ in conn.notifies():
                        callback()
            except psycopg.Error as exc:
                event(log, "listen_failed", logging.WARNING, channel=channel,
                      error=str(exc).strip())
                await asyncio.sleep(1.0)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None


class PostgresDryRun:
    """Runs each job in a transaction that is rolled back: nothing is ever stored."""

    def __init__(self, url: str, connect_timeout: float = 5.0) -> None:
        self.url = url
        self.connect_timeout = connect_timeout

    async def run(self, work: Job[T]) -> T:
        return self.run_sync(work)

    def run_sync(self, work: Job[T], timeout: float | None = None) -> T:
        conn = connect(self.url, connect_timeout=self.connect_timeout,
                       application_name="mwl-broker dry run")
        try:
            migrate(conn, commit=False)  # an empty database behaves as a new one
            return work(UnitOfWork(conn, dialect=POSTGRES))
        except psycopg.errors.IntegrityError as exc:
            raise Conflict(str(exc)) from exc
        except psycopg.Error as exc:
            raise StoreError(f"database error: {exc}") from exc
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.raw.rollback()
            conn.raw.close()
