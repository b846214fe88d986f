"""The query log: each worklist C-FIND a modality made — who asked, from where, with which keys,
what it found, how it ended — written in batches, read by the analyst's tools."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.store.connection import AsyncSql
from broker.store.repo import Repo

Row = dict[str, Any]
#: matched steps kept per query (the trace names the stations a step was returned to)
MAX_STEP_IDS = 1000


@dataclass(slots=True)
class QueryRecord:
    """One C-FIND as the query log keeps it: ``keys`` maps each matching key to its value
    as the query gave it (a range as ``low-high``, a UID list joined by ``\\``), the
    identifier is kept as received (its bytes and transfer syntax) for the preview."""

    queried_at: float
    calling_ae: str
    called_ae: str
    peer: str
    keys: dict[str, str]
    identifier: bytes
    transfer_syntax: str
    outcome: str  # done, cancelled, refused, failed
    status: int
    matches: int = 0
    ms: float = 0.0
    error: str = ""
    station_key: str = ""  # the calling AE used as the station (calling_aes[].station_key)
    step_ids: list[int] = field(default_factory=list)
    service: str = "mwl"


INSERT = ("INSERT INTO query_log (queried_at, service, calling_ae, called_ae, peer, node, keys,"
          " identifier, transfer_syntax, station_key, matches, status, outcome, error, ms,"
          " step_ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


class QueryLogRepo(Repo):
    """Rows of the query log, in the writer's transaction."""

    def add(self, records: Sequence[QueryRecord], node: str = "") -> None:
        self.conn.executemany(INSERT, [
            (r.queried_at, r.service, r.calling_ae, r.called_ae, r.peer, node,
             json.dumps(r.keys, ensure_ascii=False), r.identifier, r.transfer_syntax,
             r.station_key, r.matches, f"{r.status:04X}", r.outcome, r.error, r.ms,
             json.dumps(r.step_ids[:MAX_STEP_IDS])) for r in records])


LIST_COLUMNS = ("id, queried_at, service, calling_ae, called_ae, peer, node, keys,"
                " station_key, matches, status, outcome, error, ms")


def _row(r: Row) -> Row:
    r["keys"] = json.loads(r["keys"])
    return r


async def queries(conn: AsyncSql, station: str = "", since: float = 0.0,
                  until: float = 0.0, outcome: str = "", limit: int = 100) -> list[Row]:
    """Newest first; ``station`` is the calling AE title."""
    sql = f"SELECT {LIST_COLUMNS} FROM query_log"
    where: list[str] = []
    args: list[Any] = []
    if station:
        where.append("calling_ae = ?")
        args.append(station)
    if since:
        where.append("queried_at >= ?")
        args.append(since)
    if until:
        where.append("queried_at < ?")
        args.append(until)
    if outcome:
        where.append("outcome = ?")
        args.append(outcome)
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = await conn.rows(sql + " ORDER BY queried_at DESC, id DESC LIMIT ?", [*args, limit])
    return [_row(r) for r in rows]


async def query_entry(conn: AsyncSql, pk: int) -> Row | None:
    """One query with its identifier (bytes) and the steps it returned."""
    rows = await conn.rows(f"SELECT {LIST_COLUMNS}, identifier, transfer_syntax, step_ids"
                           " FROM query_log WHERE id = ?", (pk,))
    if not rows:
        return None
    r = _row(rows[0])
    r["identifier"] = bytes(r["identifier"])
    r["step_ids"] = json.loads(r["step_ids"])
    return r


async def last_query(conn: AsyncSql, station: str) -> Row | None:
    """The newest query the calling AE ``station`` made, with its identifier."""
    rows = await conn.rows("SELECT id FROM query_log WHERE calling_ae = ?"
                           " ORDER BY queried_at DESC, id DESC LIMIT 1", (station,))
    return await query_entry(conn, int(rows[0]["id"])) if rows else None


async def last_seen(conn: AsyncSql) -> dict[str, Row]:
    """Per calling AE: the time, outcome and matches of its newest query."""
    rows = await conn.rows(
        "SELECT q.calling_ae, q.queried_at, q.outcome, q.matches, q.status FROM query_log q"
        " JOIN (SELECT calling_ae, MAX(id) AS id FROM query_log GROUP BY calling_ae) last"
        " ON last.id = q.id ORDER BY q.calling_ae")
    return {str(r.pop("calling_ae")): r for r in rows}


async def returning(conn: AsyncSql, step_ids: Sequence[int], since: float,
                    limit: int = 200) -> list[Row]:
    """The queries since ``since`` that returned one of ``step_ids``, oldest first."""
    if not step_ids:
        return []
    wanted = set(step_ids)
    # a text prefilter both databases run alike (123 also finds 1234: checked below)
    like = " OR ".join("step_ids LIKE ?" for _ in wanted)
    rows = await conn.rows(f"SELECT {LIST_COLUMNS}, step_ids FROM query_log"
                           f" WHERE queried_at >= ? AND matches > 0 AND ({like})"
                           " ORDER BY queried_at, id", [since, *(f"%{i}%" for i in wanted)])
    out = []
    for r in rows:
        found = wanted.intersection(json.loads(r.pop("step_ids")))
        if found:
            r["step_ids"] = sorted(found)
            out.append(_row(r))
            if len(out) >= limit:
                break
    return out
