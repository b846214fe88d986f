"""The one way to open the store from its settings: the writer and every reader alike."""

from __future__ import annotations

from pathlib import Path

from broker.config import DatabaseSettings, RetentionSettings
from broker.store.admin_queries import AdminReader
from broker.store.db import connect, read_errors
from broker.store.dry_run import DryRunWriter
from broker.store.outbox_reader import OutboxReader
from broker.store.purger import Purger
from broker.store.repo import OutboxRow, outbox_entries
from broker.store.worklist_query import WorklistReader
from broker.store.writer import Writer


class Store:
    """The database of one broker: its single writer, and readers opened with the same
    settings (busy timeout, path) wherever they are needed."""

    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings
        self.path = Path(settings.path)
        self.writer = Writer(self.path, synchronous=settings.synchronous,
                             busy_timeout_ms=settings.busy_timeout_ms,
                             max_batch=settings.max_batch, poll_ms=settings.writer_poll_ms)

    def purger(self, retention: RetentionSettings) -> Purger:
        """Retention: expired rows found on a reader, deleted through the writer."""
        return Purger(self.path, self.writer, retention, self.settings.busy_timeout_ms)

    def dry_run(self) -> DryRunWriter:
        """A job runner on this database that rolls every job back (``mwl-broker map``)."""
        return DryRunWriter(self.path, self.settings.busy_timeout_ms)

    async def outbox_reader(self) -> OutboxReader:
        return await OutboxReader.open(self.path, self.settings.busy_timeout_ms)

    def worklist_reader(self) -> WorklistReader:
        """A worklist reader for one thread (each DICOM association opens its own)."""
        return WorklistReader(self.path, self.settings.busy_timeout_ms)

    async def admin_reader(self) -> AdminReader:
        """The admin side's read-only connection."""
        return await AdminReader.open(self.path, self.settings.busy_timeout_ms)

    def outbox_entries(self, state: str = "", limit: int = 100) -> list[OutboxRow]:
        """The newest outbox entries (in ``state``, when one is given), read-only."""
        with read_errors():
            conn = connect(self.path, readonly=True,
                           busy_timeout_ms=self.settings.busy_timeout_ms)
            try:
                return outbox_entries(conn, state, limit)
            finally:
                conn.close()


def open_store(settings: DatabaseSettings) -> Store:
    """The store of ``settings`` (nothing is opened until its writer starts)."""
    return Store(settings)
