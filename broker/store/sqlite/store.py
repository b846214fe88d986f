"""The SQLite store: one file, its single writer, and readers opened with the same settings."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from broker.config import DatabaseSettings, RetentionSettings
from broker.store.admin_queries import AdminReader
from broker.store.dialect import Dialect
from broker.store.outbox_reader import OutboxReader
from broker.store.purger import Purger
from broker.store.repo import OutboxRow, outbox_entries
from broker.store.sqlite.connection import connect, read_errors
from broker.store.sqlite.dialect import SQLITE
from broker.store.sqlite.dry_run import DryRunWriter
from broker.store.sqlite.readers import AsyncSqlite, SqliteWorklistReader
from broker.store.sqlite.writer import SqliteWriter


class SqliteStore:
    """The database of one broker in one SQLite file."""

    dialect: Dialect = SQLITE
    backend = "sqlite"

    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings
        self.path = Path(settings.path)
        self.description = str(self.path)
        self.writer = SqliteWriter(self.path, synchronous=settings.synchronous,
                                   busy_timeout_ms=settings.busy_timeout_ms,
                                   max_batch=settings.max_batch,
                                   poll_ms=settings.writer_poll_ms)

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection | None]:
        """A read-only connection (None when the file does not exist yet)."""
        if not self.path.exists():
            yield None
            return
        with read_errors():
            conn = connect(self.path, readonly=True,
                           busy_timeout_ms=self.settings.busy_timeout_ms)
        try:
            yield conn
        finally:
            conn.close()

    def purger(self, retention: RetentionSettings) -> Purger:
        """Retention: expired rows found on a reader, deleted through the writer."""
        return Purger(self.read, self.writer, retention, SQLITE, self.description)

    def dry_run(self) -> DryRunWriter:
        """A job runner on this database that rolls every job back (``mwl-broker map``)."""
        return DryRunWriter(self.path, self.settings.busy_timeout_ms)

    async def outbox_reader(self) -> OutboxReader:
        return OutboxReader(await AsyncSqlite.open(self.path, self.settings.busy_timeout_ms))

    def worklist_reader(self) -> SqliteWorklistReader:
        """A worklist reader for one thread (each DICOM association opens its own)."""
        return SqliteWorklistReader(self.path, self.settings.busy_timeout_ms)

    async def admin_reader(self) -> AdminReader:
        """The admin side's read-only connection."""
        return AdminReader(await AsyncSqlite.open(self.path, self.settings.busy_timeout_ms),
                           SQLITE)

    def outbox_entries(self, state: str = "", limit: int = 100) -> list[OutboxRow]:
        """The newest outbox entries (in ``state``, when one is given), read-only."""
        with self.read() as conn:
            if conn is None:
                return []
            with read_errors():
                return outbox_entries(conn, state, limit)

    async def listen(self, channel: str, callback: Callable[[], None]
                     ) -> Callable[[], Awaitable[None]]:
        """Nothing to listen to: this broker is the only one on its file."""
        async def stop() -> None:
            return None
        return stop

    def close(self) -> None:
        """Nothing to release beyond the writer (stopped by its owner)."""
