"""The one way to open the store from its settings: SQLite (``database.path``) unless
``database.url`` names a PostgreSQL database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from broker.config import DatabaseSettings, RetentionSettings
from broker.store.admin_queries import AdminReader
from broker.store.dialect import Dialect
from broker.store.outbox_reader import OutboxReader
from broker.store.ports import WorklistReader, Writer
from broker.store.purger import Purger
from broker.store.repo import OutboxRow
from broker.store.unit_of_work import JobRunner

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from broker.store.connection import Connection


class Store(Protocol):
    """The database of one broker: its single writer, and readers opened with the same
    settings wherever they are needed."""

    dialect: Dialect
    #: ``sqlite`` or ``postgresql``
    backend: str
    #: where the data lives, for logs and the console (never a password)
    description: str

    @property
    def writer(self) -> Writer: ...

    def read(self) -> AbstractContextManager[Connection | None]:
        """A read connection for the length of a ``with`` (None: no database yet)."""
        ...

    def purger(self, retention: RetentionSettings) -> Purger: ...

    def dry_run(self) -> JobRunner:
        """A job runner that rolls every job back (``mwl-broker map``)."""
        ...

    async def outbox_reader(self) -> OutboxReader: ...

    def worklist_reader(self) -> WorklistReader:
        """A worklist reader for one thread (each DICOM association opens its own)."""
        ...

    async def admin_reader(self) -> AdminReader: ...

    def outbox_entries(self, state: str = "", limit: int = 100) -> list[OutboxRow]: ...

    async def listen(self, channel: str, callback: Callable[[], None]
                     ) -> Callable[[], Awaitable[None]]:
        """Call ``callback`` when another broker signals ``channel``; returns what stops."""
        ...

    def close(self) -> None:
        """Release what the store holds besides the writer (connection pools)."""


def open_store(settings: DatabaseSettings, node: str = "") -> Store:
    """The store of ``settings`` (nothing is opened until its writer starts); ``node``
    names this broker to a shared database."""
    if settings.url:
        from broker.store.postgres.store import PostgresStore
        return PostgresStore(settings, node)
    from broker.store.sqlite.store import SqliteStore
    return SqliteStore(settings)
