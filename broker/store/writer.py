"""The single writer: one thread owns the write connection and commits work in batches.

The jobs of a batch share one transaction (group commit) and each caller is answered only
after its COMMIT is on disk. With ``synchronous=FULL`` SQLite itself runs at NORMAL (a
commit appends to the WAL without waiting for the disk) and a syncer thread fsyncs the WAL
before answering: the next batch is applied while the previous one is being synced, and one
fsync covers every batch committed meanwhile. (In WAL mode NORMAL still syncs the WAL before
and the database after each checkpoint, so a synced commit survives a power cut.)

When a job raises, the batch is rolled back and every job of it runs again in a transaction
of its own, so a failing job leaves the others intact (the rare path costs
a redo; the usual one costs no savepoints).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from broker.logs import event
from broker.store.db import connect, migrate
from broker.store.errors import Conflict, StoreError, StoreTimeout, StoreUnavailable
from broker.store.unit_of_work import Job, UnitOfWork

log = logging.getLogger("broker.store")
T = TypeVar("T")
class Handoff:
    """The outcome of one job for a caller in another thread: a bare lock that the writer
    releases (lighter than a concurrent Future's condition and callbacks)."""

    __slots__ = ("_done", "_error", "_lock", "_result")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._result: Any = None
        self._error: BaseException | None = None
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: Any) -> None:
        self._result, self._done = result, True
        self._lock.release()

    def set_exception(self, error: BaseException) -> None:
        self._error, self._done = error, True
        self._lock.release()

    def result(self, timeout: float | None = None) -> Any:
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            raise StoreTimeout("the store writer did not answer in time")
        self._lock.release()
        if self._error is not None:
            raise self._error
        return self._result


@dataclass(slots=True)
class _Job:
    """Work and where its outcome goes: an asyncio future (settled on its loop, one wake-up
    per batch) or a concurrent future (for callers in other threads)."""

    work: Job[Any]
    future: asyncio.Future[Any] | concurrent.futures.Future[Any] | Handoff


_STOP = object()
Outcome = tuple[_Job, Any, BaseException | None]


class Writer:
    def __init__(self, path: str | Path, *, synchronous: str = "FULL",
                 busy_timeout_ms: int = 5000, max_batch: int = 64,
                 poll_ms: float = 0.5) -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self.max_batch = max(1, max_batch)
        self.spin_seconds = max(0.0, poll_ms) / 1000
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self.commits = 0
        self.jobs = 0
        self.syncs = 0
        self._alive = False
        self._own_sync = synchronous.upper() == "FULL"
        self._synced: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._syncer: threading.Thread | None = None
        self.checkpoint_seconds = 0.5
        self.checkpoints = 0
        self._checkpoint_stop = threading.Event()
        self._checkpointer: threading.Thread | None = None

    def start(self) -> None:
        if self._own_sync:
            self._syncer = threading.Thread(target=self._sync_loop, name="store-syncer",
                                            daemon=True)
            self._syncer.start()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error
        self._checkpointer = threading.Thread(target=self._checkpoint_loop,
                                              name="store-checkpointer", daemon=True)
        self._checkpointer.start()

    @property
    def alive(self) -> bool:
        """The writer thread runs and takes work."""
        return self._alive

    def stop(self) -> None:
        if self._checkpointer is not None:
            self._checkpoint_stop.set()
            self._checkpointer.join()
            self._checkpointer = None
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        if self._syncer is not None:
            self._synced.put(_STOP)
            self._syncer.join()
            self._syncer = None

    def _sync_loop(self) -> None:
        """Fsync the WAL, then answer every batch committed before that fsync began."""
        while True:
            batches = [self._synced.get()]
            while True:
                try:
                    batches.append(self._synced.get_nowait())
                except queue.Empty:
                    break
            stop = any(b is _STOP for b in batches)
            pending = [b for b in batches if b is not _STOP]
            if pending:
                try:
                    self._fsync_wal()
                except OSError as exc:
                    event(log, "wal_sync_failed", logging.CRITICAL, error=str(exc))
                    failure = StoreError(f"could not make the commit durable: {exc}")
                    for outcomes in pending:
                        _deliver([(job, None, failure) for job, _, _ in outcomes])
                else:
                    self.syncs += 1
                    for outcomes in pending:
                        _deliver(outcomes)
            if stop:
                return

    def _checkpoint_loop(self) -> None:
        """Copy the WAL into the database off the commit path (PASSIVE: never blocks the
        writer or a reader); the writer's own automatic checkpoint is switched off, so no
        commit waits for a checkpoint and its fsync."""
        try:
            conn = connect(self.path, synchronous="NORMAL" if self._own_sync else self.synchronous,
                           busy_timeout_ms=self.busy_timeout_ms)
        except sqlite3.Error as exc:
            event(log, "checkpointer_failed", logging.ERROR, error=str(exc))
            return
        seen = -1
        try:
            while not self._checkpoint_stop.wait(self.checkpoint_seconds):
                if self.commits == seen:
                    continue
                seen = self.commits
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.checkpoints += 1
                except sqlite3.Error as exc:
                    event(log, "checkpoint_failed", logging.WARNING, error=str(exc))
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    def _fsync_wal(self) -> None:
        for path in (f"{self.path}-wal", str(self.path)):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # no WAL: everything was checkpointed into the (synced) database
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            return

    async def run(self, work: Job[T]) -> T:
        """Run ``work`` on the unit of work of the writer's transaction; returns after it
        is committed."""
        if not self._alive:
            raise StoreError("the store writer is not running")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put(_Job(work, future))
        return await future

    def run_sync(self, work: Job[T], timeout: float | None = None) -> T:
        """The same from a thread that is not the event loop (e.g. a DICOM association)."""
        if not self._alive:
            raise StoreError("the store writer is not running")
        handoff = Handoff()
        self._queue.put(_Job(work, handoff))
        result: T = handoff.result(timeout)
        return result

    def _run(self) -> None:
        try:
            conn = connect(self.path, synchronous="NORMAL" if self._own_sync else self.synchronous,
                           busy_timeout_ms=self.busy_timeout_ms)
            migrate(conn)
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer thread does it
        except sqlite3.Error as exc:  # reported to start()
            self._startup_error = StoreUnavailable(f"cannot open the database {self.path}: {exc}")
            self._ready.set()
            return
        except BaseException as exc:  # reported to start()
            self._startup_error = exc
            self._ready.set()
            return
        self._alive = True
        self._ready.set()
        try:
            self._serve(conn)
        finally:
            self._alive = False
            conn.close()
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
            if isinstance(item, _Job):
                _deliver([(item, None, failure)])

    def _serve(self, conn: sqlite3.Connection) -> None:
        try:
            while True:
                first = self._next_job()
                if first is _STOP:
                    break
                batch: list[_Job] = [first]
                stop = False
                while len(batch) < self.max_batch:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                        break
                    batch.append(item)
                self._commit_batch(conn, batch)
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

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        started = time.perf_counter()
        outcomes: list[Outcome] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                outcomes.append((job, job.work(UnitOfWork(conn)), None))
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if len(batch) == 1:
                self._fail_or_deliver(batch, exc)
            else:
                for job in batch:  # isolate the failing job: one transaction each
                    self._commit_batch(conn, [job])
            return
        self.commits += 1
        self.jobs += len(batch)
        if log.isEnabledFor(logging.DEBUG):
            event(log, "batch_committed", logging.DEBUG, jobs=len(batch),
                  ms=round((time.perf_counter() - started) * 1000, 3))
        if self._own_sync:
            self._synced.put(outcomes)  # answered once the WAL is on disk
        else:
            _deliver(outcomes)

    @staticmethod
    def _fail_or_deliver(batch: list[_Job], exc: Exception) -> None:
        """A job's own error (including a constraint it broke, as a Conflict) goes to its
        caller; a database failure becomes a StoreError for every caller."""
        failure: Exception = exc
        if isinstance(exc, sqlite3.IntegrityError):
            failure = Conflict(str(exc))
            failure.__cause__ = exc
        elif isinstance(exc, sqlite3.Error):
            event(log, "commit_failed", logging.ERROR, error=str(exc), jobs=len(batch))
            failure = StoreError(f"database commit failed: {exc}")
            failure.__cause__ = exc
        _deliver([(job, None, failure) for job in batch])


def _deliver(outcomes: list[Outcome]) -> None:
    """Settle every future of a batch: one call into each event loop, not one per job."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        future = outcome[0].future
        if isinstance(future, asyncio.Future):
            by_loop.setdefault(future.get_loop(), []).append(outcome)
        else:
            _settle(future, outcome[1], outcome[2])
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_settle_all, items)


def _settle_all(items: list[Outcome]) -> None:
    for job, result, error in items:
        _settle(job.future, result, error)


def _settle(future: asyncio.Future[Any] | concurrent.futures.Future[Any] | Handoff,
            result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
