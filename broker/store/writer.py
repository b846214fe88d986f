"""The single writer: one thread owns the write connection and commits work in batches.

The jobs of a batch share one transaction (group commit) and each caller is answered only
after its COMMIT is durable. A backend whose commit is not durable by itself (SQLite with
``synchronous=FULL`` runs at NORMAL) gets a syncer thread that makes the commit durable
(fsync of the WAL) before answering: the next batch is applied while the previous one is
being synced, and one sync covers every batch committed meanwhile.

When a job raises, the batch is rolled back and every job of it runs again in a transaction
of its own, so a failing job leaves the others intact (the rare path costs a redo; the usual
one costs no savepoints). A transaction the database aborted because of another one (a
deadlock, a serialization failure: several brokers on one PostgreSQL) runs again; a lost
connection is opened again before the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from broker.logs import event
from broker.store.dialect import Dialect
from broker.store.errors import Conflict, StoreError, StoreUnavailable
from broker.store.handoff import STOP, Handoff, Outcome, QueuedJob, deliver
from broker.store.unit_of_work import Job, UnitOfWork

log = logging.getLogger("broker.store")
T = TypeVar("T")
#: how often a transaction the database aborted for another one's sake is tried again
RETRIES = 5


class WriteBackend(Protocol):
    """What the writer needs of one database: its write connection and transactions."""

    dialect: Dialect
    #: a COMMIT is durable when it returns (else the writer calls ``sync`` before answering)
    durable_commit: bool
    #: where the data lives, for logs and the health page (never a password)
    description: str

    def open(self) -> Any:
        """The write connection, with the schema migrated (StoreUnavailable when not)."""

    def begin(self, conn: Any) -> Callable[[], float] | None:
        """Open a transaction; returns the database's clock when brokers share it (the
        time of the batch's jobs, read when a job first asks for it), None for this
        machine's."""

    def commit(self, conn: Any) -> None: ...

    def rollback(self, conn: Any) -> None: ...

    def close(self, conn: Any) -> None: ...

    def classify(self, exc: BaseException) -> str:
        """``conflict`` (a constraint the job broke), ``retry`` (aborted for another
        transaction's sake), ``lost`` (the connection is gone), ``database`` (another
        database error) or ``job`` (not the database's: the job's own error)."""

    def sync(self) -> None:
        """Make every commit so far durable (only when ``durable_commit`` is false)."""

    def upkeep(self, stop: threading.Event, commits: Any) -> None:
        """Background maintenance until ``stop`` is set (SQLite: WAL checkpoints)."""


class _Worker:
    """One writer thread's backend and write connection."""

    __slots__ = ("backend", "busy_since", "conn", "thread")

    def __init__(self, backend: WriteBackend) -> None:
        self.backend = backend
        self.conn: Any = None
        self.thread: threading.Thread | None = None
        #: time.monotonic() when its current batch began (0: waiting for work)
        self.busy_since = 0.0


class BatchWriter:
    """The writer over one backend; ``start`` opens (and migrates) the database.

    ``more`` are further backends on the same database, each with a thread and connection of
    its own taking batches from the one queue (PostgreSQL: a batch's round trips overlap the
    next batch's work; the jobs' own locks order what must be ordered). SQLite has one."""

    def __init__(self, backend: WriteBackend, *, max_batch: int = 64, poll_ms: float = 0.0,
                 busy_timeout_ms: int = 5000, more: tuple[WriteBackend, ...] = ()) -> None:
        self.backend = backend
        self._workers = [_Worker(b) for b in (backend, *more)]
        self._running = 0
        self._running_lock = threading.Lock()
        self.busy_timeout_ms = busy_timeout_ms
        self.max_batch = max(1, max_batch)
        self.spin_seconds = max(0.0, poll_ms) / 1000
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._startup_error: BaseException | None = None
        self.commits = 0
        self.jobs = 0
        self.syncs = 0
        self.retries = 0
        self.reconnects = 0
        self._alive = False
        self._own_sync = not backend.durable_commit
        self._synced: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._syncer: threading.Thread | None = None
        self._upkeep_stop = threading.Event()
        self._upkeeper: threading.Thread | None = None
        self._sync_since = 0.0  # time.monotonic() when the fsync under way began (0: none)

    @property
    def description(self) -> str:
        return self.backend.description

    def status(self) -> dict[str, Any]:
        """Counters; ``queued``: jobs waiting for a writer thread; ``busy_seconds``: how long
        the oldest batch (or fsync) under way has taken (0: idle), a stall when it grows."""
        since = [t for t in (*(w.busy_since for w in self._workers), self._sync_since) if t]
        return {"commits": self.commits, "jobs": self.jobs, "syncs": self.syncs,
                "retries": self.retries, "reconnects": self.reconnects,
                "queued": self._queue.qsize(),
                "busy_seconds": round(time.monotonic() - min(since), 3) if since else 0.0}

    def start(self) -> None:
        if self._own_sync:
            self._syncer = threading.Thread(target=self._sync_loop, name="store-syncer",
                                            daemon=True)
            self._syncer.start()
        for k, worker in enumerate(self._workers):  # the first one migrates the schema
            ready = threading.Event()
            worker.thread = threading.Thread(target=self._run, args=(worker, ready),
                                             name="store-writer" + (f"-{k}" if k else ""),
                                             daemon=True)
            worker.thread.start()
            ready.wait()
            if self._startup_error is not None:
                self.stop()
                raise self._startup_error
        self._upkeeper = threading.Thread(target=self.backend.upkeep, name="store-upkeep",
                                          args=(self._upkeep_stop, lambda: self.commits),
                                          daemon=True)
        self._upkeeper.start()

    @property
    def alive(self) -> bool:
        """The writer threads run and take work."""
        return self._alive

    def stop(self) -> None:
        if self._upkeeper is not None:
            self._upkeep_stop.set()
            self._upkeeper.join()
            self._upkeeper = None
        started = [w for w in self._workers if w.thread is not None]
        for _ in started:
            self._queue.put(STOP)
        for worker in started:
            assert worker.thread is not None
            worker.thread.join()
            worker.thread = None
        if self._syncer is not None:
            self._synced.put(STOP)
            self._syncer.join()
            self._syncer = None

    def _sync_loop(self) -> None:
        """Make the commits durable, then answer every batch committed before that began."""
        while True:
            batches = [self._synced.get()]
            while True:
                try:
                    batches.append(self._synced.get_nowait())
                except queue.Empty:
                    break
            stop = any(b is STOP for b in batches)
            pending = [b for b in batches if b is not STOP]
            if pending:
                self._sync(*pending)
            if stop:
                return

    def _sync(self, *pending: list[Outcome]) -> None:
        """Make the committed batches durable, then answer them (or fail them)."""
        self._sync_since = time.monotonic()
        try:
            self.backend.sync()
        except OSError as exc:
            event(log, "wal_sync_failed", logging.CRITICAL, error=str(exc))
            failure = StoreError(f"could not make the commit durable: {exc}")
            for outcomes in pending:
                deliver([(job, None, failure) for job, _, _ in outcomes])
        else:
            self.syncs += 1
            for outcomes in pending:
                deliver(outcomes)
        finally:
            self._sync_since = 0.0

    async def run(self, work: Job[T]) -> T:
        """Run ``work`` on the unit of work of the writer's transaction; returns after it
        is committed."""
        if not self._alive:
            raise StoreError("the store writer is not running")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put(QueuedJob(work, future))
        return await future

    def run_sync(self, work: Job[T], timeout: float | None = None) -> T:
        """The same from a thread that is not the event loop (e.g. a DICOM association)."""
        if not self._alive:
            raise StoreError("the store writer is not running")
        handoff = Handoff()
        self._queue.put(QueuedJob(work, handoff))
        result: T = handoff.result(timeout)
        return result

    def _run(self, worker: _Worker, ready: threading.Event) -> None:
        try:
            worker.conn = worker.backend.open()
        except BaseException as exc:  # reported to start()
            self._startup_error = exc
            ready.set()
            return
        with self._running_lock:
            self._running += 1
        self._alive = True
        ready.set()
        try:
            self._serve(worker)
        finally:
            if worker.conn is not None:
                with contextlib.suppress(Exception):
                    worker.backend.close(worker.conn)
            with self._running_lock:
                self._running -= 1
                last = not self._running
            if last:
                self._alive = False
                self._fail_waiting("the store writer stopped")
                event(log, "writer_stopped", commits=self.commits, jobs=self.jobs,
                      mean_batch=round(self.jobs / self.commits, 2) if self.commits else 0)

    def _fail_waiting(self, reason: str) -> None:
        """Answer every job still queued, so that no caller waits for ever."""
        failure = StoreError(reason)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, QueuedJob):
                deliver([(item, None, failure)])

    def _serve(self, worker: _Worker) -> None:
        try:
            while True:
                first = self._next_job()
                if first is STOP:
                    break
                batch: list[QueuedJob] = [first]
                stop = False
                limit = self.max_batch
                if len(self._workers) > 1:  # leave the other writers their share
                    limit = min(limit, -(-(self._queue.qsize() + 1) // len(self._workers)))
                while len(batch) < limit:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is STOP:
                        stop = True
                        break
                    batch.append(item)
                worker.busy_since = time.monotonic()
                self._commit_batch(worker, batch)
                worker.busy_since = 0.0
                if stop:
                    break
        except BaseException as exc:
            event(log, "writer_failed", logging.CRITICAL, error=repr(exc))
            raise

    def _next_job(self) -> Any:
        """The next job; polls (yielding the GIL) for a moment before sleeping, because
        waking a sleeping thread costs far more than the poll on a virtual machine."""
        deadline = time.perf_counter() + self.spin_seconds
        while True:
            try:
                return self._queue.get_nowait()
            except queue.Empty:
                if time.perf_counter() > deadline:
                    return self._queue.get()
                time.sleep(0)

    def _connection(self, worker: _Worker) -> Any:
        """The write connection, opened again when it was lost (StoreUnavailable while the
        database cannot be reached)."""
        if worker.conn is None:
            try:
                worker.conn = worker.backend.open()
            except StoreError:
                raise
            except Exception as exc:
                raise StoreUnavailable(f"cannot reach the database: {exc}") from exc
            self.reconnects += 1
            event(log, "store_reconnected", database=worker.backend.description)
        return worker.conn

    @staticmethod
    def _lose(worker: _Worker, exc: BaseException) -> None:
        event(log, "store_connection_lost", logging.ERROR, error=str(exc).strip(),
              database=worker.backend.description)
        with contextlib.suppress(Exception):
            worker.backend.close(worker.conn)
        worker.conn = None

    def _commit_batch(self, worker: _Worker, batch: list[QueuedJob], attempt: int = 0) -> None:
        started = time.perf_counter()
        outcomes: list[Outcome] = []
        backend = worker.backend
        try:
            conn = self._connection(worker)
        except StoreError as exc:
            deliver([(job, None, exc) for job in batch])
            return
        try:
            now = backend.begin(conn)
            for job in batch:
                outcomes.append((job, job.work(UnitOfWork(conn, now, backend.dialect)), None))
            backend.commit(conn)
        except Exception as exc:
            kind = backend.classify(exc)
            if kind == "lost":
                self._lose(worker, exc)
            else:
                with contextlib.suppress(Exception):
                    backend.rollback(conn)
            if kind == "retry" and attempt < RETRIES:
                self.retries += 1
                time.sleep(0.001 * (attempt + 1))
                self._commit_batch(worker, batch, attempt + 1)
            elif len(batch) == 1:
                self._fail_ordeliver(batch, exc, kind)
            elif kind == "lost":
                failure = StoreUnavailable(f"the database connection was lost: {exc}")
                deliver([(job, None, failure) for job in batch])
            else:
                for job in batch:  # isolate the failing job: one transaction each
                    self._commit_batch(worker, [job])
            return
        self.commits += 1
        self.jobs += len(batch)
        if log.isEnabledFor(logging.DEBUG):
            event(log, "batch_committed", logging.DEBUG, jobs=len(batch),
                  ms=round((time.perf_counter() - started) * 1000, 3))
        if not self._own_sync:
            deliver(outcomes)
        elif self._queue.empty() and self._synced.empty() and not self._sync_since:
            self._sync(outcomes)  # nothing to overlap the fsync with: no hand-off to make
        else:
            self._synced.put(outcomes)  # answered once the commit is durable

    @staticmethod
    def _fail_ordeliver(batch: list[QueuedJob], exc: Exception, kind: str) -> None:
        """A job's own error (including a constraint it broke, as a Conflict) goes to its
        caller; a database failure becomes a StoreError for every caller."""
        failure: Exception = exc
        if kind == "conflict":
            failure = Conflict(str(exc))
            failure.__cause__ = exc
        elif kind == "lost":
            failure = StoreUnavailable(f"the database connection was lost: {exc}")
            failure.__cause__ = exc
        elif kind in ("database", "retry"):
            event(log, "commit_failed", logging.ERROR, error=str(exc).strip(), jobs=len(batch))
            failure = StoreError(f"database commit failed: {exc}")
            failure.__cause__ = exc
        deliver([(job, None, failure) for job in batch])
