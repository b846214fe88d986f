"""A read-only look at a broker's database: its SQLite file, or the PostgreSQL database of
MWL_DATABASE_URL when the tests run on PostgreSQL (tests/conftest.py)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any


class Db:
    """Read-only look at a broker's database (SQL with ``?`` placeholders on both)."""

    def __init__(self, path: Path | str) -> None:
        """``path``: a SQLite file, or a PostgreSQL URL (BrokerProcess.db on PostgreSQL);
        a file path while the tests run on PostgreSQL means the test's own database."""
        text = str(path)
        self.url = text if text.startswith(("postgresql://", "postgres://")) else \
            os.environ.get("MWL_DATABASE_URL", "")
        self.path = Path(path)

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self.url:
            import psycopg

            from broker.store.postgres.dialect import to_psycopg

            with psycopg.connect(self.url, autocommit=True) as pg:
                return [tuple(r) for r in pg.execute(to_psycopg(sql), args).fetchall()]
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def execute(self, sql: str, *args: Any) -> int:
        """Change rows behind the broker's back (tests that age rows): the rows changed."""
        if self.url:
            import psycopg

            from broker.store.postgres.dialect import to_psycopg

            with psycopg.connect(self.url, autocommit=True) as pg:
                return int(pg.execute(to_psycopg(sql), args).rowcount)
        conn = sqlite3.connect(self.path, timeout=10)
        try:
            with conn:
                return int(conn.execute(sql, args).rowcount)
        finally:
            conn.close()

    def integrity(self) -> list[str]:
        """Damage found: SQLite's integrity_check, or amcheck of every B-tree index and
        heap on PostgreSQL; [] when none."""
        if not self.url:
            rows = [str(r[0]) for r in self.query("PRAGMA integrity_check")]
            return [] if rows == ["ok"] else rows
        self.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        import psycopg

        try:  # amcheck raises on a damaged index
            self.query("SELECT count(bt_index_check(i.indexrelid, true)) FROM pg_index i"
                       " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON"
                       " a.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace"
                       " WHERE a.amname = 'btree' AND n.nspname = current_schema()")
        except psycopg.Error as exc:
            return [str(exc)]
        problems = [f"{r[0]}: {r[1]}" for r in self.query(
            "SELECT c.relname, v.msg FROM pg_class c JOIN pg_namespace n ON"
            " n.oid = c.relnamespace, verify_heapam(c.oid) v WHERE c.relkind = 'r'"
            " AND n.nspname = current_schema()")]
        return problems

    def tables(self) -> set[str]:
        """The tables the database has (none: no file, or an empty database)."""
        if not self.url and not self.path.exists():
            return set()
        if self.url:
            sql = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        else:
            sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
        return {str(r[0]) for r in self.query(sql)}

    def counts(self) -> dict[str, int]:
        return {t: self.query(f"SELECT COUNT(*) FROM {t}")[0][0]
                for t in ("patients", "procedures", "steps", "step_stations")}

    def domain_snapshot(self) -> list[tuple[Any, ...]]:
        """Everything but the message log, to show a rejected message changed nothing."""
        return (self.query("SELECT patient_id, issuer, attrs, merged_into FROM patients "
                           "ORDER BY id")
                + self.query("SELECT study_uid, attrs, patient_fk FROM procedures ORDER BY id")
                + self.query("SELECT sps_id, status, attrs FROM steps ORDER BY id"))

    def patient(self, patient_id: str, issuer: str = "") -> dict[str, Any]:
        rows = self.query("SELECT attrs, merged_into, id FROM patients WHERE patient_id = ? "
                          "AND issuer = ?", patient_id, issuer)
        assert rows, f"no patient {patient_id}/{issuer}"
        return {**json.loads(rows[0][0]), "_merged_into": rows[0][1], "_id": rows[0][2]}

    def procedure(self, study_uid: str) -> dict[str, Any]:
        rows = self.query(
            "SELECT p.attrs, pt.patient_id, p.accession, p.placer_order, p.priority, p.id "
            "FROM procedures p JOIN patients pt ON pt.id = p.patient_fk WHERE study_uid = ?",
            study_uid)
        assert rows, f"no procedure {study_uid}"
        attrs = json.loads(rows[0][0])
        return {**attrs, "_patient_id": rows[0][1], "_accession": rows[0][2],
                "_placer": rows[0][3], "_priority": rows[0][4], "_id": rows[0][5]}

    def steps(self, study_uid: str) -> dict[str, dict[str, Any]]:
        rows = self.query(
            "SELECT s.sps_id, s.status, s.attrs, s.modality, s.start_dt, s.id FROM steps s "
            "JOIN procedures p ON p.id = s.procedure_fk WHERE p.study_uid = ? ORDER BY s.id",
            study_uid)
        out = {}
        for sps, status, attrs, modality, start_dt, pk in rows:
            stations = [r[0] for r in self.query(
                "SELECT station_aet FROM step_stations WHERE step_fk = ? ORDER BY station_aet",
                pk)]
            out[sps] = {**json.loads(attrs), "_status": status, "_modality": modality,
                        "_start_dt": start_dt, "_stations": stations}
        return out

    def log(self) -> list[tuple[Any, ...]]:
        return self.query("SELECT control_id, outcome, duplicate_of, message_type, error "
                          "FROM message_log ORDER BY id")
