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


class PostgresWorklistReader:
    """Worklist queries for one DICOM association, each on a connection of the pool."""

    def __init__(self, pool: ConnectionPool[Any], url: str, timeout: float = 5.0) -> None:
        self._pool = pool
        self._url = url
        self._timeout = timeout

    def search(self, query: WorklistQuery) -> Iterator[WorklistRow]:
        """Matching steps, earliest start first, read lazily through a server-side cursor
        (a C-CANCEL stops the reading; the pooled connection is returned when it ends)."""
        statement = build(query, POSTGRES)
        try:
            with read_errors(self._url), self._pool.connection(self._timeout) as conn, \
                    conn.transaction(), conn.cursor(name="worklist") as cursor:
                cursor.itersize = 64
                cursor.execute(to_psycopg(statement.sql), statement.params)
                yield from rows(cursor, statement.filters)
        except PoolTimeout as exc:
            raise StoreUnavailable(f"no database connection free in {self._timeout}s "
                                   "(database.pool_size)") from exc

    def close(self) -> None:
        """The connections belong to the pool."""
