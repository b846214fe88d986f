"""The shapes of the connections the shared SQL runs on (sqlite3, psycopg, their asyncio
readers): what the repositories and readers may call."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

Params = Sequence[Any] | dict[str, Any]


class Batches(Protocol):
    """Rows read a batch at a time (a cursor, or rows already fetched)."""

    def fetchmany(self, size: int = ...) -> list[Any]: ...


class Connection(Protocol):
    """A connection in a transaction: the shared SQL's ``?`` / ``:name`` placeholders."""

    def execute(self, sql: str, parameters: Params = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Iterable[Params], /) -> Any: ...


class AsyncSql(Protocol):
    """An asyncio read connection: each statement run to its end in one hop."""

    async def rows(self, sql: str, args: Any = ...) -> list[dict[str, Any]]: ...

    async def tuples(self, sql: str, args: Any = ...) -> list[tuple[Any, ...]]: ...

    async def close(self) -> None: ...
