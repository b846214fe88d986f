"""What the rest of the broker sees of the store: the shapes of its writer, its readers and
the connection its repositories run on (SQLite and PostgreSQL implement them alike)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from broker.model.worklist import WorklistQuery
    from broker.store.admin_queries import OutboxStats, Row, WorklistFilter
    from broker.store.alert_queries import WorkflowStats
    from broker.store.connection import AsyncSql
    from broker.store.dialect import Dialect
    from broker.store.repo import OutboxRow
    from broker.store.unit_of_work import Job
    from broker.store.worklist_query import WorklistRow

T = TypeVar("T")


class Writer(Protocol):
    """The store's single writer: jobs run in its transactions, answered after the commit."""

    busy_timeout_ms: int

    @property
    def alive(self) -> bool: ...

    @property
    def description(self) -> str:
        """Where the data lives (a file, a database URL without its password)."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    async def run(self, work: Job[T]) -> T: ...

    def run_sync(self, work: Job[T], timeout: float | None = None) -> T: ...

    def status(self) -> dict[str, Any]:
        """Counters for the health page (commits, jobs, …)."""
        ...


class WorklistReader(Protocol):
    """A worklist reader for one thread."""

    def search(self, query: WorklistQuery) -> Iterator[WorklistRow]: ...

    def close(self) -> None: ...


class OutboxReader(Protocol):
    async def due(self, now: float, limit: int = 100, destination: str | None = None,
                  others: tuple[str, ...] = ()) -> list[OutboxRow]: ...

    async def next_due_at(self, destination: str | None = None,
                          others: tuple[str, ...] = ()) -> float | None: ...

    async def close(self) -> None: ...


class AdminReader(Protocol):
    """The admin console's reads (plain JSON-ready rows)."""

    async def worklist(self, f: WorklistFilter) -> list[Row]: ...

    async def procedure_history(self, key: str) -> list[Row]: ...

    async def messages(self, text: str = "", outcome: str = "", limit: int = 100
                       ) -> list[Row]: ...

    async def message(self, pk: int) -> Row | None: ...

    async def outbox(self, state: str = "", limit: int = 200) -> list[Row]: ...

    async def outbox_entry(self, pk: int) -> Row | None: ...

    async def outbox_stats(self) -> OutboxStats: ...

    async def cluster(self, window: float) -> Row: ...

    @property
    def conn(self) -> AsyncSql:
        """The connection, for readers that share it (broker.store.analyst_queries)."""
        ...

    @property
    def dialect(self) -> Dialect: ...

    async def workflow_stats(self, late_minutes: Sequence[int]) -> WorkflowStats: ...

    async def senders_last_seen(self, since: float) -> list[tuple[str, str, float]]: ...

    async def close(self) -> None: ...


OpenOutboxReader = Callable[[], Awaitable[OutboxReader]]
#: listen(channel, callback) → what stops listening: other brokers' notifications
Listen = Callable[[str, Callable[[], None]], Awaitable[Callable[[], Awaitable[None]]]]
OpenAdminReader = Callable[[], Awaitable[AdminReader]]
