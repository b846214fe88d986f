"""A UID list is one bound value in the worklist SQL, whatever its length: no list a caller
sends (or a raised dicom.max_query_uids lets through) reaches SQLite's variable limit."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from broker.model.worklist import Match, WorklistQuery
from broker.store.sqlite.connection import connect, migrate
from broker.store.sqlite.readers import explain, search
from broker.store.worklist_query import build_sql

#: SQLite's SQLITE_MAX_VARIABLE_NUMBER before 3.32 (32766 after; builds may raise it)
OLD_LIMIT = 999
MANY = 5 * OLD_LIMIT


def uid_list(keyword: str, count: int) -> WorklistQuery:
    values = tuple(f"1.2.826.0.1.3680043.8.498.{n}" for n in range(count))
    return WorklistQuery(matches=[Match(keyword, "list", values=values)])


def test_a_uid_list_is_one_sql_variable() -> None:
    _, params = build_sql(uid_list("StudyInstanceUID", MANY))
    assert len(params) < 10


def test_a_huge_uid_list_is_answered_not_a_store_error(tmp_path: Path) -> None:
    conn = connect(tmp_path / "w.sqlite", synchronous="OFF")
    migrate(conn)
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, OLD_LIMIT)
    try:
        assert list(search(conn, uid_list("StudyInstanceUID", MANY))) == []
    except sqlite3.OperationalError as exc:  # 'too many SQL variables' read as store down
        raise AssertionError(exc) from exc
    finally:
        conn.close()


def test_a_uid_list_still_uses_the_index(tmp_path: Path) -> None:
    conn = connect(tmp_path / "w.sqlite", synchronous="OFF")
    migrate(conn)
    try:
        plan = " ".join(explain(conn, uid_list("StudyInstanceUID", 3)))
    finally:
        conn.close()
    assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, plan
