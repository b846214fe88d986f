"""PostgreSQL's spelling of the dialect pieces (jsonb, LIKE in the C collation, string_agg),
and the translation of the shared SQL's placeholders to psycopg's."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from broker.store.dialect import Dialect


class PostgresDialect(Dialect):
    name = "postgresql"
    python_functions = False
    locks = True
    chained_inserts = True

    def json_rows(self, names: Sequence[str], integers: Sequence[str] = ()) -> str:
        columns = ", ".join(
            f"CAST(j.value ->> {i} AS bigint) AS {name}" if name in integers
            else f"j.value ->> {i} AS {name}" for i, name in enumerate(names))
        return (f"(SELECT {columns}, j.ord FROM jsonb_array_elements(CAST(? AS jsonb))"
                " WITH ORDINALITY AS j(value, ord))")

    def json_values(self, integer: bool = False) -> str:
        if integer:
            return "(SELECT CAST(jsonb_array_elements_text(CAST(? AS jsonb)) AS bigint))"
        return "(SELECT jsonb_array_elements_text(CAST(? AS jsonb)))"

    def wildcard(self, column: str) -> str:
        return f"{column} LIKE ? ESCAPE '\\'"

    def wildcard_param(self, pattern: str) -> str:
        escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return escaped.replace("*", "%").replace("?", "_")

    def string_agg(self, expression: str, separator: str, distinct: bool = False) -> str:
        sep = "," if distinct else separator
        return f"string_agg({'DISTINCT ' if distinct else ''}{expression}, '{sep}')"

    def json_text(self, column: str, key: str) -> str:
        return f"(CAST({column} AS jsonb) ->> '{key}')"

    def position(self, needle: str, haystack: str) -> str:
        return f"strpos({haystack}, {needle})"

    def tables(self) -> str:
        return ("SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema()"
                " ORDER BY tablename")

    def cascades(self, conn: Any) -> list[tuple[str, str, str, bool]]:
        rows = conn.execute(
            "SELECT c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text,"
            " EXISTS (SELECT 1 FROM pg_attribute i WHERE i.attrelid = c.conrelid"
            " AND i.attname = 'id' AND NOT i.attisdropped)"
            " FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid"
            " AND a.attnum = c.conkey[1]"
            " WHERE c.contype = 'f' AND c.confdeltype = 'c'"
            " AND c.connamespace = current_schema()::regnamespace ORDER BY 1, 2").fetchall()
        return [(str(r[0]), str(r[1]), str(r[2]), bool(r[3])) for r in rows]

    def lock(self, conn: Any, keys: Sequence[str]) -> None:
        # sorted and distinct: two transactions lock shared keys in one order (no deadlock);
        # one statement, whatever the number of keys
        wanted = sorted({k for k in keys if k})
        if wanted:
            conn.execute("SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM"
                         " (SELECT unnest(CAST(? AS text[])) AS k) AS keys", (wanted,))

    def now(self) -> str:
        return "extract(epoch from clock_timestamp())::double precision"

    def notify(self, conn: Any, channel: str) -> None:
        conn.execute(f"NOTIFY {channel}")

    def changed(self, conn: Any, cursor: Any) -> int:
        """In the writer's pipeline a statement's row count is known once it is synced."""
        pipeline = getattr(conn, "pipeline", None)
        if pipeline is not None:
            pipeline.sync()
        return int(cursor.rowcount)


POSTGRES = PostgresDialect()

#: a quoted string, a ``::`` cast, a ``?``, a ``:name``, or a ``%``
_TOKEN = re.compile(r"'(?:[^']|'')*'|::|\?|:([A-Za-z_][A-Za-z0-9_]*)|%")


@lru_cache(maxsize=4096)
def to_psycopg(sql: str) -> str:
    """The shared SQL's ``?`` and ``:name`` placeholders as psycopg's ``%s`` and
    ``%(name)s``, quoted strings and casts left alone (every literal ``%`` doubled: psycopg
    reads placeholders inside quotes too)."""
    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token.startswith("'"):
            return token.replace("%", "%%")
        if token == "?":
            return "%s"
        if token == "%":
            return "%%"
        if match.group(1):
            return f"%({match.group(1)})s"
        return token
    return _TOKEN.sub(replace, sql)
