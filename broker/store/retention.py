"""Retention rules: which rows have expired, and how to delete them with what hangs on them.

Each table has one rule. Finding expired rows runs on a read connection (a long scan never
holds the write lock); deleting runs in the single writer's transaction, one bounded chunk of
ids at a time, and checks again that each row is still expired (it may have changed since).
To cover a new table, add one delete function and one ``Rule`` to ``RULES``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

ENDED_STEPS = "('COMPLETED', 'DISCONTINUED', 'CANCELED')"
ENDED_MPPS = "('COMPLETED', 'DISCONTINUED')"
IDS = "(SELECT value FROM json_each(?))"

#: rows removed, by table
Removed = dict[str, int]


@dataclass(frozen=True)
class Rule:
    """Rows of ``table`` matching ``expired`` (one parameter: the cutoff time) are removed by
    ``delete``; ``name`` is the retention setting of their age (``<name>_days``)."""

    name: str
    table: str
    expired: str
    delete: Callable[[sqlite3.Connection, str, float], Removed]

    def count(self, conn: sqlite3.Connection, cutoff: float) -> int:
        sql = f"SELECT COUNT(*) FROM {self.table} WHERE {self.expired}"
        return int(conn.execute(sql, (cutoff,)).fetchone()[0])

    def candidates(self, conn: sqlite3.Connection, cutoff: float, limit: int) -> list[int]:
        """Up to ``limit`` expired row ids (run on a read connection)."""
        sql = f"SELECT id FROM {self.table} WHERE {self.expired} LIMIT ?"
        return [int(r[0]) for r in conn.execute(sql, (cutoff, limit))]

    def purge(self, conn: sqlite3.Connection, ids: list[int], cutoff: float) -> Removed:
        """Delete those of ``ids`` that are still expired (run in the writer's transaction)."""
        return self.delete(conn, json.dumps(ids), cutoff) if ids else {}


def _delete_steps(conn: sqlite3.Connection, ids: str, cutoff: float) -> Removed:
    """Ended steps; their station rows and MPPS links go by cascade, then the procedures left
    without steps and the ended MPPS left without scheduled steps."""
    rows = conn.execute(f"SELECT id, procedure_fk FROM steps WHERE id IN {IDS} AND "
                        f"{STEPS.expired}", (ids, cutoff)).fetchall()
    if not rows:
        return {}
    steps = json.dumps([r[0] for r in rows])
    procedures = json.dumps(sorted({r[1] for r in rows}))
    mpps = json.dumps([r[0] for r in conn.execute(
        f"SELECT DISTINCT mpps_fk FROM mpps_steps WHERE step_fk IN {IDS}", (steps,))])
    removed = {"steps": conn.execute(f"DELETE FROM steps WHERE id IN {IDS}", (steps,)).rowcount}
    removed["procedures"] = conn.execute(
        f"DELETE FROM procedures WHERE id IN {IDS} AND NOT EXISTS "
        "(SELECT 1 FROM steps WHERE steps.procedure_fk = procedures.id)", (procedures,)).rowcount
    removed["mpps"] = conn.execute(
        f"DELETE FROM mpps WHERE id IN {IDS} AND status IN {ENDED_MPPS} AND NOT EXISTS "
        "(SELECT 1 FROM mpps_steps WHERE mpps_steps.mpps_fk = mpps.id)", (mpps,)).rowcount
    return removed


def _delete_mpps(conn: sqlite3.Connection, ids: str, cutoff: float) -> Removed:
    """Ended MPPS; their step links (and what later tables hang on them) go by cascade."""
    return {"mpps": conn.execute(f"DELETE FROM mpps WHERE id IN {IDS} AND {MPPS.expired}",
                                 (ids, cutoff)).rowcount}


def _delete_messages(conn: sqlite3.Connection, ids: str, cutoff: float) -> Removed:
    """Logged messages; a kept resend that pointed at one becomes the original of record."""
    conn.execute(f"UPDATE message_log SET duplicate_of = NULL WHERE duplicate_of IN {IDS}",
                 (ids,))
    return {"message_log": conn.execute(
        f"DELETE FROM message_log WHERE id IN {IDS} AND {MESSAGE_LOG.expired}",
        (ids, cutoff)).rowcount}


def _delete_outbox(conn: sqlite3.Connection, ids: str, cutoff: float) -> Removed:
    """Messages the destination acknowledged (pending and dead letters are never purged)."""
    return {"outbox": conn.execute(
        f"DELETE FROM outbox WHERE id IN {IDS} AND {OUTBOX_DELIVERED.expired}",
        (ids, cutoff)).rowcount}


STEPS = Rule("steps", "steps", f"status IN {ENDED_STEPS} AND updated_at < ?", _delete_steps)
MPPS = Rule("mpps", "mpps", f"status IN {ENDED_MPPS} AND updated_at < ?", _delete_mpps)
MESSAGE_LOG = Rule("message_log", "message_log", "received_at < ?", _delete_messages)
OUTBOX_DELIVERED = Rule("outbox_delivered", "outbox", "state = 'delivered' AND updated_at < ?",
                        _delete_outbox)

#: in the order they run: steps first, so the MPPS that covered only them go with them
RULES: tuple[Rule, ...] = (STEPS, MPPS, MESSAGE_LOG, OUTBOX_DELIVERED)
