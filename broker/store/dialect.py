"""What differs between the SQL of two databases, as small pieces of SQL text.

The repositories hold one SQL text, written with ``?`` (and ``:name``) placeholders; where
SQLite and PostgreSQL spell a thing differently they ask their dialect for the piece. JSON
array parameters carry lists of rows or ids (one parameter, whatever the length), so a step
list or an id list is one statement on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Dialect:
    """The pieces of SQL one database spells its own way."""

    name = ""
    #: the database can call Python functions from SQL (SQLite's create_function)
    python_functions = False
    #: lock() takes locks (brokers share the database); else one writer serialises all
    locks = False
    #: INSERTs can feed each other inside one statement (a data-modifying WITH): a new
    #: order is one round trip where each one costs (broker.store.placing)
    chained_inserts = False

    def json_rows(self, names: Sequence[str], integers: Sequence[str] = ()) -> str:
        """A FROM source of the rows of one JSON array-of-arrays parameter: a column per
        name (those in ``integers`` as integers), plus ``ord`` (the row's position)."""
        raise NotImplementedError

    def json_values(self, integer: bool = False) -> str:
        """A one-column sub-query of the values of one JSON array parameter."""
        raise NotImplementedError

    def wildcard(self, column: str) -> str:
        """``column`` matches the pattern parameter made by :meth:`wildcard_param`."""
        raise NotImplementedError

    def wildcard_param(self, pattern: str) -> str:
        """A DICOM wildcard pattern (``*`` any run, ``?`` one character) as this database's
        pattern, every other character literal."""
        raise NotImplementedError

    def string_agg(self, expression: str, separator: str, distinct: bool = False) -> str:
        raise NotImplementedError

    def json_text(self, column: str, key: str) -> str:
        """The text of member ``key`` of the JSON object stored in ``column``."""
        raise NotImplementedError

    def position(self, needle: str, haystack: str) -> str:
        """1-based position of ``needle`` in ``haystack`` (0: absent)."""
        raise NotImplementedError

    def tables(self) -> str:
        """A query of the names of the schema's tables (one column, ``name``)."""
        raise NotImplementedError

    def cascades(self, conn: Any) -> list[tuple[str, str, str, bool]]:
        """(child table, its column, parent table, whether the child has an ``id`` column)
        of each ``ON DELETE CASCADE`` foreign key of the schema."""
        raise NotImplementedError

    def lock(self, conn: Any, keys: Sequence[str]) -> None:
        """Transaction-scoped locks on business keys (none where one writer does it all)."""

    def now(self) -> str:
        """The database's clock, in seconds since the epoch (brokers sharing a database
        agree on it: leases and timers use it, never a broker's own clock)."""
        raise NotImplementedError

    def changed(self, conn: Any, cursor: Any) -> int:
        """The number of rows the statement of ``cursor`` (run on ``conn``) changed."""
        return int(cursor.rowcount)

    def notify(self, conn: Any, channel: str) -> None:
        """Tell the other brokers, at commit, that ``channel`` has news (none on SQLite)."""
