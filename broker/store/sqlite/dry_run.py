"""A store that forgets: jobs run on the real database (or an empty one) and are rolled back,
so a dry run meets the same stored data and the same code as the real path."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TypeVar

from broker.store.errors import Conflict, StoreError
from broker.store.sqlite.connection import migrate
from broker.store.sqlite.dialect import SQLITE
from broker.store.unit_of_work import Job, UnitOfWork

T = TypeVar("T")


class DryRunWriter:
    """Runs each job in a transaction that is rolled back: nothing is ever stored."""

    def __init__(self, path: str | Path, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms

    async def run(self, work: Job[T]) -> T:
        return self.run_sync(work)

    def run_sync(self, work: Job[T], timeout: float | None = None) -> T:
        """``work``'s result, its changes undone (an absent database is an empty one)."""
        try:
            exists = self.path.exists()
            conn = sqlite3.connect(str(self.path) if exists else ":memory:",
                                   isolation_level=None, timeout=self.busy_timeout_ms / 1000)
            conn.execute("PRAGMA foreign_keys = ON")
            if not exists:
                migrate(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database {self.path}: {exc}") from exc
        try:
            conn.execute("BEGIN")
            try:
                return work(UnitOfWork(conn, dialect=SQLITE))
            finally:
                conn.execute("ROLLBACK")
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from exc
        except sqlite3.Error as exc:
            raise StoreError(f"database error: {exc}") from exc
        finally:
            conn.close()
