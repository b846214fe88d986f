"""psycopg connections that speak the shared SQL: ``?`` and ``:name`` placeholders."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg
from psycopg.rows import dict_row

from broker.config.checks import safe_url
from broker.store.connection import Params
from broker.store.errors import StoreUnavailable
from broker.store.postgres.dialect import to_psycopg


class PgConnection:
    """A psycopg connection with the repositories' ``execute`` / ``executemany``."""

    __slots__ = ("pipeline", "raw")

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw
        #: the writer's batch runs in pipeline mode (results read when asked for)
        self.pipeline: psycopg.Pipeline | None = None

    def execute(self, sql: str, parameters: Params = (), /) -> psycopg.Cursor[Any]:
        return self.raw.execute(to_psycopg(sql), parameters)

    def executemany(self, sql: str, parameters: Iterable[Params], /) -> psycopg.Cursor[Any]:
        cursor = self.raw.cursor()
        cursor.executemany(to_psycopg(sql), parameters)
        return cursor


def connect(url: str, *, autocommit: bool = False, connect_timeout: float = 5.0,
            application_name: str = "mwl-broker") -> PgConnection:
    """A new connection (StoreUnavailable when PostgreSQL cannot be reached)."""
    try:
        raw = psycopg.connect(url, autocommit=autocommit,
                              connect_timeout=max(1, round(connect_timeout)),
                              application_name=application_name)
    except psycopg.Error as exc:
        raise StoreUnavailable(f"cannot connect to {safe_url(url)}: {exc}".strip()) from exc
    return PgConnection(raw)


@contextlib.contextmanager
def read_errors(url: str = "") -> Iterator[None]:
    """psycopg's errors on a read as the store's own (StoreUnavailable)."""
    try:
        yield
    except psycopg.Error as exc:
        where = f" ({safe_url(url)})" if url else ""
        raise StoreUnavailable(f"database read failed{where}: {exc}".strip()) from exc


class AsyncPg:
    """An asyncio connection as the async readers' ``rows`` (dicts) / ``tuples``; opened
    again after PostgreSQL went away."""

    def __init__(self, url: str, connect_timeout: float = 5.0,
                 application_name: str = "mwl-broker") -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self.application_name = application_name
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=max(1, round(self.connect_timeout)),
                    application_name=self.application_name)
            except psycopg.Error as exc:
                raise StoreUnavailable(f"cannot connect to {safe_url(self.url)}: {exc}"
                                       ) from exc
        return self._conn

    async def rows(self, sql: str, args: Any = ()) -> list[dict[str, Any]]:
        conn = await self._connection()
        with read_errors(self.url):
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(to_psycopg(sql), args)
                return await cur.fetchall()

    async def tuples(self, sql: str, args: Any = ()) -> list[tuple[Any, ...]]:
        conn = await self._connection()
        with read_errors(self.url):
            async with conn.cursor() as cur:
                await cur.execute(to_psycopg(sql), args)
                return await cur.fetchall()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
