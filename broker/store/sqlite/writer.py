"""SQLite under the single writer: WAL, fsync of the WAL before answering
(``synchronous=FULL``), and WAL checkpoints off the commit path.

With ``synchronous=FULL`` SQLite itself runs at NORMAL (a commit appends to the WAL without
waiting for the disk) and the writer's syncer thread fsyncs the WAL before answering. (In WAL
mode NORMAL still syncs the WAL before and the database after each checkpoint, so a synced
commit survives a power cut.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker.logs import event
from broker.store.dialect import Dialect
from broker.store.errors import StoreUnavailable
from broker.store.sqlite.connection import connect, migrate
from broker.store.sqlite.dialect import SQLITE
from broker.store.worklist_query import pn_match
from broker.store.writer import BatchWriter

log = logging.getLogger("broker.store")


class SqliteBackend:
    """The write side of one SQLite file."""

    dialect: Dialect = SQLITE

    def __init__(self, path: str | Path, synchronous: str = "FULL",
                 busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self.durable_commit = synchronous.upper() != "FULL"
        self.description = str(self.path)
        self.checkpoint_seconds = 0.5
        self.checkpoints = 0

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path, synchronous="NORMAL" if not self.durable_commit
                       else self.synchronous, busy_timeout_ms=self.busy_timeout_ms)

    def open(self) -> sqlite3.Connection:
        try:
            conn = self._connect()
            migrate(conn)
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # the upkeep thread does it
            # the worklist SQL on the writer too (UPS: a filtered subscription's match)
            conn.create_function("pn_match", 2, pn_match, deterministic=True)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open the database {self.path}: {exc}") from exc
        return conn

    def begin(self, conn: sqlite3.Connection) -> Callable[[], float] | None:
        conn.execute("BEGIN IMMEDIATE")
        return None

    def commit(self, conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")

    def rollback(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def close(self, conn: sqlite3.Connection) -> None:
        conn.close()

    def classify(self, exc: BaseException) -> str:
        if isinstance(exc, sqlite3.IntegrityError):
            return "conflict"
        if isinstance(exc, sqlite3.Error):
            return "database"
        return "job"

    def sync(self) -> None:
        """Fsync the WAL (or the database, when everything was checkpointed)."""
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

    def upkeep(self, stop: threading.Event, commits: Callable[[], int]) -> None:
        """Copy the WAL into the database off the commit path (PASSIVE: never blocks the
        writer or a reader); the writer's own automatic checkpoint is switched off, so no
        commit waits for a checkpoint and its fsync."""
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            event(log, "checkpointer_failed", logging.ERROR, error=str(exc))
            return
        seen = -1
        try:
            while not stop.wait(self.checkpoint_seconds):
                if commits() == seen:
                    continue
                seen = commits()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.checkpoints += 1
                except sqlite3.Error as exc:
                    event(log, "checkpoint_failed", logging.WARNING, error=str(exc))
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()


class SqliteWriter(BatchWriter):
    """The single writer of one SQLite file."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL",
                 busy_timeout_ms: int = 5000, max_batch: int = 64,
                 poll_ms: float = 0.0) -> None:
        self.sqlite = SqliteBackend(path, synchronous, busy_timeout_ms)
        super().__init__(self.sqlite, max_batch=max_batch, poll_ms=poll_ms,
                         busy_timeout_ms=busy_timeout_ms)
        self.path = self.sqlite.path
        self.synchronous = synchronous

    @property
    def checkpoints(self) -> int:
        return self.sqlite.checkpoints

    @property
    def checkpoint_seconds(self) -> float:
        return self.sqlite.checkpoint_seconds

    @checkpoint_seconds.setter
    def checkpoint_seconds(self, value: float) -> None:
        self.sqlite.checkpoint_seconds = value

    def status(self) -> dict[str, Any]:
        return {**super().status(), "checkpoints": self.checkpoints}
