"""What a write job receives: the repositories of one transaction, never a connection."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from broker.store.completion import CompletionRepo
from broker.store.messages import MessageLog
from broker.store.orders import OrderRepo
from broker.store.repo import MppsRepo, OutboxRepo
from broker.store.retention import RetentionRepo

T = TypeVar("T")


class UnitOfWork:
    """The repositories of one write transaction, all on the same clock (``now``).

    The writer builds one per job; everything a job does through it commits or rolls back
    together.
    """

    __slots__ = ("_conn", "completion", "messages", "mpps", "now", "orders", "outbox",
                 "retention")

    def __init__(self, conn: sqlite3.Connection, now: float | None = None) -> None:
        self._conn = conn
        self.now = time.time() if now is None else now
        self.messages = MessageLog(conn, self.now)
        self.orders = OrderRepo(conn, self.now)
        self.mpps = MppsRepo(conn, self.now)
        self.outbox = OutboxRepo(conn, self.now)
        self.completion = CompletionRepo(conn, self.now)
        self.retention = RetentionRepo(conn)

    def at(self, now: float | None) -> UnitOfWork:
        """The same transaction with its clock at ``now`` (None: this one's)."""
        return self if now is None or now == self.now else UnitOfWork(self._conn, now)


#: a write job: runs in the writer's transaction, its result is returned after the commit
Job = Callable[[UnitOfWork], T]


class JobRunner(Protocol):
    """What runs write jobs: the store's writer, or a dry run that rolls every job back."""

    async def run(self, work: Job[T]) -> T: ...
