"""PostgreSQL's readers: worklist queries on pooled connections (one per query, returned
when its rows are read), and the person-name matching PostgreSQL cannot do itself."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from psycopg_pool import ConnectionPool, PoolTimeout

from broker.model.worklist import WorklistQuery
from broker.store.errors import StoreUnavailable
from broker.store.postgres.connection import read_errors
from broker.store.postgres.dialect import POSTGRES, to_psycopg
from broker.store.worklist_query import WorklistRow, build, rows


class _Rows:
    """Fetched rows as the cursor ``rows()`` reads."""

    def __init__(self, data: list[Any]) -> None:
        self._data = data
        self._at = 0

    def fetchmany(self, size: int = 64) -> list[Any]:
        chunk = self._data[self._at:self._at + size]
        self._at += size
        return chunk


class PostgresWorklistReader:
    """Worklist queries for one DICOM association, each on a connection of the pool."""

    def __init__(self, pool: ConnectionPool[Any], url: str, timeout: float = 5.0) -> None:
        self._pool = pool
        self._url = url
        self._timeout = timeout

    def search(self, query: WorklistQuery) -> Iterator[WorklistRow]:
        """Matching steps, earliest start first (read at once, the connection returned)."""
        statement = build(query, POSTGRES)
        try:
            with read_errors(self._url), self._pool.connection(self._timeout) as conn:
                data = conn.execute(to_psycopg(statement.sql), statement.params).fetchall()
        except PoolTimeout as exc:
            raise StoreUnavailable(f"no database connection free in {self._timeout}s "
                                   "(database.pool_size)") from exc
        yield from rows(_Rows(data), statement.filters)

    def close(self) -> None:
        """The connections belong to the pool."""
