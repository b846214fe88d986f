"""Records every worklist C-FIND into the query log, off the query's path.

An association thread appends its record to a bounded buffer (a deque append: no lock, no
I/O); the event loop stores what has gathered once per ``interval`` as one writer job, so a
busy worklist costs one insert batch a second, not a commit per query. When the store is
down the buffer keeps the newest ``max_pending`` records and counts those it dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from broker.logs import event
from broker.store.errors import StoreError
from broker.store.query_log import QueryRecord
from broker.store.unit_of_work import JobRunner

log = logging.getLogger("broker.analyst")


class QueryRecorder:
    def __init__(self, writer: JobRunner, node: str = "", interval: float = 1.0,
                 max_pending: int = 20000) -> None:
        self.writer = writer
        self.node = node
        self.interval = interval
        self._pending: deque[QueryRecord] = deque(maxlen=max_pending)
        self.max_pending = max_pending
        self.recorded = 0
        self.stored = 0
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None

    def record(self, record: QueryRecord) -> None:
        """From any thread: keep ``record`` for the next batch."""
        if len(self._pending) >= self.max_pending:
            self.dropped += 1  # the deque drops the oldest itself
        self._pending.append(record)
        self.recorded += 1

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="query-log")

    async def stop(self) -> None:
        """Store what is still buffered, then stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(StoreError):
            await self.flush()

    async def flush(self) -> int:
        """Store the buffered records now (one transaction); returns how many."""
        batch: list[QueryRecord] = []
        pending = self._pending
        while pending and len(batch) < 5000:
            batch.append(pending.popleft())
        if not batch:
            return 0
        node = self.node
        try:
            await self.writer.run(lambda uow: uow.queries.add(batch, node))
        except StoreError:
            pending.extendleft(reversed(batch))  # kept (up to max_pending) for the next try
            raise
        self.stored += len(batch)
        return len(batch)

    async def _run(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.interval)
            try:
                while await self.flush() >= 5000:
                    pass
                if failing:
                    event(log, "query_log_resumed", pending=self.pending)
                failing = False
            except StoreError as exc:
                if not failing:
                    event(log, "query_log_store_failed", logging.WARNING, error=str(exc),
                          pending=self.pending, dropped=self.dropped)
                failing = True

    def status(self) -> dict[str, int]:
        return {"recorded": self.recorded, "stored": self.stored, "pending": self.pending,
                "dropped": self.dropped}
