"""A read-only look at a PostgreSQL database shared by brokers (``mwl-broker doctor``):
reachable, its schema, the clocks of this machine and of each broker, the lane owners."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from broker.config.checks import safe_url
from broker.store.cluster import ALIVE_WINDOW
from broker.store.errors import StoreUnavailable


@dataclass(slots=True)
class PostgresInspection:
    server_version: str
    round_trip_ms: float
    #: this machine's clock minus the database's, in seconds
    clock_offset: float
    schema_version: int
    compatible_from: int
    nodes: list[dict[str, Any]] = field(default_factory=list)
    lanes: list[dict[str, Any]] = field(default_factory=list)


def inspect(url: str, connect_timeout: float = 5.0) -> PostgresInspection:
    """StoreUnavailable when the database cannot be reached."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=max(1, round(
                connect_timeout)), application_name="mwl-broker doctor") as conn:
            sent = time.time()
            row = conn.execute("SELECT extract(epoch from clock_timestamp())::double precision,"
                               " current_setting('server_version')").fetchone()
            back = time.time()
            assert row is not None
            found = PostgresInspection(str(row[1]), round((back - sent) * 1000, 2),
                                       round((sent + back) / 2 - float(row[0]), 3), 0, 0)
            if conn.execute("SELECT to_regclass('schema_info') IS NOT NULL").fetchone() == (
                    True,):
                info = conn.execute("SELECT version, compatible_from FROM schema_info"
                                    ).fetchone()
                if info:
                    found.schema_version, found.compatible_from = int(info[0]), int(info[1])
            if conn.execute("SELECT to_regclass('nodes') IS NOT NULL").fetchone() == (True,):
                found.nodes = _dicts(conn, "SELECT node_id, host, clock_offset,"
                                     " extract(epoch from clock_timestamp()) - seen_at AS ago,"
                                     " stopped_at IS NULL AND seen_at >= extract(epoch from"
                                     " clock_timestamp()) - %s AS alive FROM nodes"
                                     " ORDER BY node_id", (ALIVE_WINDOW,))
                found.lanes = _dicts(conn, "SELECT destination, owner, fence, expires_at >="
                                     " extract(epoch from clock_timestamp()) AS held"
                                     " FROM lanes ORDER BY destination")
            return found
    except psycopg.Error as exc:
        raise StoreUnavailable(f"cannot reach {safe_url(url)}: {str(exc).strip()}") from exc


def _dicts(conn: psycopg.Connection[Any], sql: str, args: Any = ()) -> list[dict[str, Any]]:
    cur = conn.execute(sql, args)
    names = [c.name for c in cur.description or []]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
