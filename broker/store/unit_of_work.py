"""What a write job receives: the repositories of one transaction, never a connection."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from broker.store.cluster import ClusterRepo
from broker.store.completion import CompletionRepo
from broker.store.connection import Connection
from broker.store.dialect import Dialect
from broker.store.fhir import FhirRepo
from broker.store.fhir_links import FhirLinkRepo
from broker.store.messages import MessageLog
from broker.store.orders import OrderRepo
from broker.store.query_log import QueryLogRepo
from broker.store.repo import MppsRepo, OutboxRepo, Repo
from broker.store.retention import RetentionRepo
from broker.store.sqlite.dialect import SQLITE
from broker.store.ups import UpsRepo
from broker.store.upstream import UpstreamRepo

T = TypeVar("T")
R = TypeVar("R", bound=Repo)


class UnitOfWork:
    """The repositories of one write transaction, all on the same clock (``now``).

    The writer builds one per job; everything a job does through it commits or rolls back
    together. ``now`` may be a function (the database's clock, read once per batch): it is
    called when a job first needs the time, so a job on a clock of its own (``at``) costs
    no read of it. Each repository is made when the job first uses it.
    """

    __slots__ = ("_clock", "_conn", "_now", "_repos", "dialect")

    def __init__(self, conn: Connection, now: float | Callable[[], float] | None = None,
                 dialect: Dialect = SQLITE) -> None:
        self._conn = conn
        self.dialect = dialect
        self._clock: Callable[[], float] | None = None
        self._now: float | None = None
        if callable(now):
            self._clock = now
        else:
            self._now = time.time() if now is None else now
        self._repos: dict[type, object] = {}

    @property
    def now(self) -> float:
        if self._now is None:
            assert self._clock is not None
            self._now = self._clock()
        return self._now

    def _repo(self, kind: type[R]) -> R:
        repo = self._repos.get(kind)
        if repo is None:
            repo = self._repos[kind] = kind(self._conn, self.now, self.dialect)
        return repo  # type: ignore[return-value]

    @property
    def messages(self) -> MessageLog:
        return self._repo(MessageLog)

    @property
    def orders(self) -> OrderRepo:
        return self._repo(OrderRepo)

    @property
    def mpps(self) -> MppsRepo:
        return self._repo(MppsRepo)

    @property
    def outbox(self) -> OutboxRepo:
        return self._repo(OutboxRepo)

    @property
    def completion(self) -> CompletionRepo:
        return self._repo(CompletionRepo)

    @property
    def ups(self) -> UpsRepo:
        return self._repo(UpsRepo)

    @property
    def queries(self) -> QueryLogRepo:
        return self._repo(QueryLogRepo)

    @property
    def upstream(self) -> UpstreamRepo:
        return self._repo(UpstreamRepo)

    @property
    def fhir_links(self) -> FhirLinkRepo:
        return self._repo(FhirLinkRepo)

    @property
    def fhir(self) -> FhirRepo:
        return self._repo(FhirRepo)

    @property
    def cluster(self) -> ClusterRepo:
        return self._repo(ClusterRepo)

    @property
    def retention(self) -> RetentionRepo:
        repo = self._repos.get(RetentionRepo)
        if repo is None:
            repo = self._repos[RetentionRepo] = RetentionRepo(self._conn, self.dialect)
        return repo  # type: ignore[return-value]

    def at(self, now: float | None) -> UnitOfWork:
        """The same transaction with its clock at ``now`` (None: this one's)."""
        if now is None or now == self._now:
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
