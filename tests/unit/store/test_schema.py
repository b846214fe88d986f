"""Schema migrations on SQLite: a database of an older version is brought up to date, and
migration 7 turns second accepted originals (left by older retention runs) into duplicates
before the database enforces one accepted original per sender and control ID."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from broker.store.schema import MIGRATIONS
from broker.store.sqlite.connection import connect, migrate, schema_version


def at_version(path: Path, version: int) -> sqlite3.Connection:
    conn = connect(path, synchronous="OFF")
    for statement in ";".join(MIGRATIONS[:version]).split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


def log(conn: sqlite3.Connection, control_id: str, duplicate_of: int | None = None) -> int:
    return int(conn.execute(
        "INSERT INTO message_log (received_at, sender_application, sender_facility, control_id,"
        " outcome, duplicate_of, raw) VALUES (0, 'RIS', 'HOSP', ?, 'AA', ?, x'00')"
        " RETURNING id", (control_id, duplicate_of)).fetchone()[0])


def test_second_originals_become_duplicates_then_the_database_enforces_one(tmp_path: Path
                                                                           ) -> None:
    conn = at_version(tmp_path / "old.sqlite", 6)
    first, second, other = log(conn, "C1"), log(conn, "C1"), log(conn, "C2")
    resend = log(conn, "C1", first)
    assert migrate(conn) == len(MIGRATIONS) and schema_version(conn) == len(MIGRATIONS)
    rows = dict(conn.execute("SELECT id, duplicate_of FROM message_log").fetchall())
    assert rows == {first: None, second: first, other: None, resend: first}
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        log(conn, "C2")
    log(conn, "C2", other)  # a duplicate is fine
    conn.close()
