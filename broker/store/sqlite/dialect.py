"""SQLite's spelling of the dialect pieces (JSON1, GLOB, group_concat)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from broker.store.dialect import Dialect


class SqliteDialect(Dialect):
    name = "sqlite"
    python_functions = True

    def json_rows(self, names: Sequence[str], integers: Sequence[str] = ()) -> str:
        columns = ", ".join(f"json_extract(value, '$[{i}]') AS {name}"
                            for i, name in enumerate(names))
        return f"(SELECT {columns}, key AS ord FROM json_each(?))"

    def json_values(self, integer: bool = False) -> str:
        return "(SELECT value FROM json_each(?))"

    def wildcard(self, column: str) -> str:
        return f"{column} GLOB ?"

    def wildcard_param(self, pattern: str) -> str:
        # only * and ? stay special; GLOB's [ … ] sets are escaped ([[] is a literal [)
        return pattern.replace("[", "[[]")

    def string_agg(self, expression: str, separator: str, distinct: bool = False) -> str:
        if distinct:  # SQLite: DISTINCT takes the default separator (a comma) only
            return f"group_concat(DISTINCT {expression})"
        return f"group_concat({expression}, '{separator}')"

    def json_text(self, column: str, key: str) -> str:
        return f"json_extract({column}, '$.{key}')"

    def position(self, needle: str, haystack: str) -> str:
        return f"instr({haystack}, {needle})"

    def tables(self) -> str:
        return ("SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' ORDER BY name")

    def cascades(self, conn: Any) -> list[tuple[str, str, str, bool]]:
        out = []
        for (child,) in conn.execute(self.tables()).fetchall():
            has_id = any(r[1] == "id" for r in conn.execute(f"PRAGMA table_info({child})"))
            for fk in conn.execute(f"PRAGMA foreign_key_list({child})").fetchall():
                if str(fk[6]).upper() == "CASCADE":
                    out.append((str(child), str(fk[3]), str(fk[2]), has_id))
        return out

    def now(self) -> str:
        return "((julianday('now') - 2440587.5) * 86400.0)"


SQLITE = SqliteDialect()
