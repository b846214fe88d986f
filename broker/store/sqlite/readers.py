"""SQLite's readers: a read-only connection per worklist thread, and aiosqlite connections
for the outbox lanes and the admin console (the event loop never waits for SQLite)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiosqlite

from broker.model.worklist import WorklistQuery
from broker.store.outbox_reader import OutboxReader
from broker.store.ports import OpenOutboxReader
from broker.store.sqlite.connection import connect, read_errors
from broker.store.sqlite.dialect import SQLITE
from broker.store.worklist_query import WorklistRow, build, build_sql, pn_match, rows


def open_reader(path: str | Path, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A read-only connection with the functions worklist SQL uses."""
    conn = connect(path, readonly=True, busy_timeout_ms=busy_timeout_ms)
    conn.execute("PRAGMA query_only = ON")
    conn.create_function("pn_match", 2, pn_match, deterministic=True)
    return conn


def search(conn: sqlite3.Connection, query: WorklistQuery) -> Iterator[WorklistRow]:
    """Matching steps, earliest start first, read lazily (a C-CANCEL stops the reading)."""
    statement = build(query, SQLITE)
    cursor = conn.execute(statement.sql, statement.params)
    try:
        yield from rows(cursor, statement.filters)
    finally:
        cursor.close()  # also when the caller stops early (C-CANCEL): release the snapshot


def explain(conn: sqlite3.Connection, query: WorklistQuery) -> list[str]:
    """SQLite's query plan, for tests that check the indexes are used."""
    sql, params = build_sql(query)
    return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]


class SqliteWorklistReader:
    """A read-only connection for worklist queries, used by one thread; errors are the
    store's own (StoreUnavailable)."""

    def __init__(self, path: str | Path, busy_timeout_ms: int = 5000) -> None:
        with read_errors():
            self._conn = open_reader(path, busy_timeout_ms)

    def search(self, query: WorklistQuery) -> Iterator[WorklistRow]:
        """Matching steps, earliest start first, read lazily."""
        with read_errors():
            yield from search(self._conn, query)

    def close(self) -> None:
        self._conn.close()


class AsyncSqlite:
    """An aiosqlite connection as the async readers' ``rows`` (dicts) / ``tuples``."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    @classmethod
    async def open(cls, path: str | Path, busy_timeout_ms: int = 5000) -> AsyncSqlite:
        with read_errors():
            conn = await aiosqlite.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
            conn.row_factory = sqlite3.Row
            await conn.execute_fetchall(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        return cls(conn)

    async def rows(self, sql: str, args: Any = ()) -> list[dict[str, Any]]:
        # one hop that runs the statement to its end: no statement stays open (with its old
        # read snapshot) while another request reads on this connection
        with read_errors():
            return [dict(r) for r in await self._conn.execute_fetchall(sql, args)]

    async def tuples(self, sql: str, args: Any = ()) -> list[tuple[Any, ...]]:
        with read_errors():
            return [tuple(r) for r in await self._conn.execute_fetchall(sql, args)]

    async def close(self) -> None:
        await self._conn.close()


def outbox_reader(path: str | Path, busy_timeout_ms: int = 5000) -> OpenOutboxReader:
    """What opens an outbox reader on the SQLite file ``path``."""
    async def open_reader() -> OutboxReader:
        return OutboxReader(await AsyncSqlite.open(path, busy_timeout_ms))
    return open_reader
