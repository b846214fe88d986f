"""Looks at a database file: integrity, journal mode, tables and their row counts."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from broker.store.errors import StoreUnavailable
from broker.store.sqlite.connection import connect, schema_version


def integrity_problems(conn: sqlite3.Connection, quick: bool = False,
                       limit: int = 10) -> list[str]:
    """What ``PRAGMA integrity_check`` (or the faster ``quick_check``) finds; [] when ok."""
    pragma = "quick_check" if quick else "integrity_check"
    rows = [str(r[0]) for r in conn.execute(f"PRAGMA {pragma}({int(limit)})")]
    return [] if rows == ["ok"] else rows


def journal_mode(conn: sqlite3.Connection) -> str:
    return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()


def table_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Rows of every table, by name."""
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        " ORDER BY name")]
    return {name: int(conn.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0])
            for name in names}


class UnreadableDatabase(StoreUnavailable):
    """The database file cannot be opened or read; ``damaged`` when it is not a readable
    database at all (else access: owner, permissions, a lock)."""

    def __init__(self, reason: str, damaged: bool) -> None:
        super().__init__(reason)
        self.damaged = damaged


@dataclass(slots=True)
class Inspection:
    """What a read-only look at a database file finds."""

    schema_version: int
    quick_problems: list[str]
    problems: list[str]
    journal_mode: str


def inspect(path: str | Path, busy_timeout_ms: int = 5000) -> Inspection:
    """Open the file read-only and check it; UnreadableDatabase when it cannot be read."""
    conn: sqlite3.Connection | None = None
    try:
        conn = connect(path, readonly=True, busy_timeout_ms=busy_timeout_ms)
        version = schema_version(conn)
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise UnreadableDatabase(str(exc), not isinstance(exc, sqlite3.OperationalError)
                                 ) from exc
    try:
        return Inspection(version, _problems(conn, True), _problems(conn, False),
                          journal_mode(conn))
    finally:
        conn.close()


def _problems(conn: sqlite3.Connection, quick: bool) -> list[str]:
    try:
        return integrity_problems(conn, quick=quick)
    except sqlite3.Error as exc:
        return [str(exc)]
