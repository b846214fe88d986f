"""What the alert rules (conf/prometheus/alerts.yml) watch in the database, read at each
scrape: counts by indexes, the same SQL on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from broker.store.connection import AsyncSql as Conn
from broker.store.dialect import Dialect

#: storage commitments count as timed out for this long after their deadline
COMMITMENT_WINDOW = 3600.0
#: scheduled steps whose start is older than this are no longer counted as late (no-shows)
LATE_STEP_HORIZON = 12 * 3600.0


@dataclass
class WorkflowStats:
    commitments_timed_out: int  # deadline passed in the last COMMITMENT_WINDOW, no report
    completions_overdue: int  # completion notices waiting past their deadline
    steps_not_started: dict[int, int]  # minutes → SCHEDULED steps that late or later


def local_start(seconds: float) -> str:
    """A Unix time as a step's ``start_dt`` (YYYYMMDDHHMMSS, local time)."""
    return time.strftime("%Y%m%d%H%M%S", time.localtime(seconds))


async def workflow_stats(conn: Conn, d: Dialect, late_minutes: Sequence[int],
                         now: float | None = None) -> WorkflowStats:
    """Counts by the indexes of commitments (state, timeout_at), completions (state,
    deadline) and steps (status, start_dt); deadlines on the database's clock (the timers'),
    start times on this machine's local clock (the worklist's)."""
    present = {r["name"] for r in await conn.rows(d.tables())}
    clock = d.now()
    timed_out = overdue = 0
    if "commitments" in present:
        timed_out = await _count(conn, f"""
            SELECT COUNT(*) AS n FROM commitments WHERE state IN ('requested', 'timed_out')
            AND timeout_at <= {clock} AND timeout_at > {clock} - ?""", (COMMITMENT_WINDOW,))
    if "completions" in present:
        overdue = await _count(conn, "SELECT COUNT(*) AS n FROM completions"
                               f" WHERE state = 'waiting' AND deadline < {clock}")
    now = time.time() if now is None else now
    minutes = sorted(late_minutes)
    late: dict[int, int] = dict.fromkeys(minutes, 0)
    if minutes:
        cuts = [local_start(now - m * 60) for m in minutes]
        sums = ", ".join(f"SUM(CASE WHEN start_dt <= ? THEN 1 ELSE 0 END) AS late_{m}"
                         for m in minutes)
        rows = await conn.rows(f"""
            SELECT {sums} FROM steps WHERE status = 'SCHEDULED' AND start_dt > ?
            AND start_dt <= ? AND start_time != ''""",
            [*cuts, local_start(now - LATE_STEP_HORIZON), cuts[0]])
        late = {m: int(rows[0][f"late_{m}"] or 0) for m in minutes}
    return WorkflowStats(timed_out, overdue, late)


async def _count(conn: Conn, sql: str, args: Any = ()) -> int:
    return int((await conn.rows(sql, args))[0]["n"])


async def senders_last_seen(conn: Conn, since: float) -> list[tuple[str, str, float]]:
    """(MSH-3, MSH-4, Unix time of the last message) of each sender logged since ``since``
    (by the message log's time index)."""
    rows = await conn.rows("""
        SELECT sender_application AS app, sender_facility AS fac, MAX(received_at) AS last
        FROM message_log WHERE received_at >= ? AND replayed_by = ''
        GROUP BY sender_application, sender_facility
        ORDER BY sender_application, sender_facility""", (since,))
    return [(r["app"], r["fac"], float(r["last"])) for r in rows]
