"""SQLite connections (WAL, pragmas) and migrations."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from broker.logs import event
from broker.store.errors import StoreUnavailable
from broker.store.schema import MIGRATIONS, STEPS

log = logging.getLogger("broker.store")
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


def connect(path: str | Path, *, synchronous: str = "FULL", busy_timeout_ms: int = 5000,
            readonly: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL journal."""
    if synchronous.upper() not in SYNCHRONOUS:
        raise ValueError(f"database.synchronous must be one of {', '.join(SYNCHRONOUS)}")
    if readonly:
        conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True,
                               isolation_level=None, check_same_thread=True)
    else:
        create_private(path)
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=True)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def create_private(path: str | Path) -> None:
    """Create the database file (and its folder) readable by this user only, unless it
    exists. SQLite gives its -wal, -shm and -journal files the mode of the database file, so
    they are 0600 too; an existing file keeps its mode."""
    Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.fchmod(fd, 0o600)  # whatever the umask
    os.close(fd)


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to the newest version; returns it."""
    version = schema_version(conn)
    if version > len(MIGRATIONS):
        raise RuntimeError(f"database schema version {version} is newer than this broker "
                           f"({len(MIGRATIONS)}); upgrade the broker")
    for number in range(version + 1, len(MIGRATIONS) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[number - 1].split(";"):
                if statement.strip():
                    conn.execute(statement)
            if number in STEPS:
                STEPS[number](conn)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        event(log, "schema_migrated", version=number)
    return len(MIGRATIONS)


@contextlib.contextmanager
def read_errors() -> Iterator[None]:
    """SQLite's errors on a read as the store's own (StoreUnavailable)."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreUnavailable(str(exc)) from exc
