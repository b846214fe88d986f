"""What a write job receives: the repositories of one transaction, never a connection."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from broker.store.cluster import ClusterRepo
from broker.store.completion import CompletionRepo
from broker.store.connection import Connection
from broker.store.dialect import Dialect
from broker.store.messages import MessageLog
from broker.store.orders import OrderRepo
from broker.store.repo import MppsRepo, OutboxRepo
from broker.store.retention import RetentionRepo
from broker.store.sqlite.dialect import SQLITE

T = TypeVar("T")


class UnitOfWork:
    """The repositories of one write transaction, all on the same clock (``now``).

    The writer builds one per job; everything a job does through it commits or rolls back
    together.
    """

    __slots__ = ("_conn", "cluster", "completion", "dialect", "messages", "mpps", "now",
                 "orders", "outbox", "retention")

    def __init__(self, conn: Connection, now: float | None = None,
                 dialect: Dialect = SQLITE) -> None:
        self._conn = conn
        self.dialect = dialect
        self.now = time.time() if now is None else now
        self.messages = MessageLog(conn, self.now, dialect)
        self.orders = OrderRepo(conn, self.now, dialect)
        self.mpps = MppsRepo(conn, self.now, dialect)
        self.outbox = OutboxRepo(conn, self.now, dialect)
        self.completion = CompletionRepo(conn, self.now, dialect)
        self.retention = RetentionRepo(conn, dialect)
        self.cluster = ClusterRepo(conn, self.now, dialect)

    def at(self, now: float | None) -> UnitOfWork:
        """The same transaction with its clock at ``now`` (None: this one's)."""
        if now is None or now == self.now:
            return self
        return UnitOfWork(self._conn, now, self.dialect)

    @property
    def locks(self) -> bool:
        """Whether :meth:`lock` takes locks (else skip computing the keys)."""
        return self.dialect.locks

    def lock(self, *keys: str) -> None:
        """Serialise this transaction with every other one that locks one of ``keys``
        (business keys: a patient, an order, a study) until it ends. SQLite's single writer
        serialises everything already; PostgreSQL takes transaction-scoped advisory locks,
        so that brokers sharing one database apply the events of one key in turn. (The
        writer's pipeline sends the lock without waiting for it: every later statement of the
        transaction runs under it, and the first result read waits for it.)"""
        self.dialect.lock(self._conn, keys)


#: a write job: runs in the writer's transaction, its result is returned after the commit
Job = Callable[[UnitOfWork], T]


class JobRunner(Protocol):
    """What runs write jobs: the store's writer, or a dry run that rolls every job back."""

    async def run(self, work: Job[T]) -> T: ...
