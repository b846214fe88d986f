"""Retention rules: which rows have expired, and how to delete them with what hangs on them.

Each table has one rule. Finding expired rows runs on a read connection (a long scan never
holds the write lock); deleting runs in the single writer's transaction, one bounded chunk of
ids at a time, and checks again that each row is still expired (it may have changed since).
What a deletion takes with it (``ON DELETE CASCADE``) is read from the schema's foreign keys,
so the counts of a purge and of its dry run name every row, by table.

An MPPS that is kept keeps the scheduled steps it covers (and their procedure): a step is not
purged while an MPPS that links to it has not expired itself (``retention.mpps_days: 0``
keeps those steps for ever).
To cover a new table, add one function that names its doomed rows and one ``Rule``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from broker.store.connection import Connection
from broker.store.dialect import Dialect
from broker.store.sqlite.dialect import SQLITE

ENDED_STEPS = "('COMPLETED', 'DISCONTINUED', 'CANCELED')"
ENDED_MPPS = "('COMPLETED', 'DISCONTINUED')"

#: rows removed, by table
Removed = dict[str, int]
#: rule name → the time before which its rows expire (0.0: kept for ever)
Cutoffs = dict[str, float]
#: ids of the rows a rule deletes itself, by table (the cascades come on top)
Doomed = dict[str, list[int]]


@dataclass(frozen=True)
class Rule:
    """Rows of ``table`` matching ``expired`` (named parameters: the cutoffs by rule name)
    are removed; ``doomed`` names them and any row the rule removes with them; ``prepare``
    runs before the deletion (to unlink rows that must stay); ``name`` is the retention
    setting of their age (``<name>_days``)."""

    name: str
    table: str
    expired: str
    doomed: Callable[[Connection, Dialect, str, Cutoffs], Doomed]
    prepare: Callable[[Connection, Dialect, str], None] | None = None

    def candidates(self, conn: Connection, cutoffs: Cutoffs, limit: int = -1,
                   d: Dialect = SQLITE) -> list[int]:
        """Up to ``limit`` (-1: all) expired row ids (run on a read connection)."""
        sql = f"SELECT id FROM {self.table} WHERE {self.expired} ORDER BY id"
        if limit >= 0:
            sql += f" LIMIT {int(limit)}"
        return [int(r[0]) for r in conn.execute(sql, dict(cutoffs))]

    def still_expired(self, conn: Connection, ids: str, cutoffs: Cutoffs,
                      d: Dialect = SQLITE) -> list[int]:
        sql = (f"SELECT id FROM {self.table} WHERE id IN "
               f"{d.json_values(integer=True).replace('?', ':ids')} AND {self.expired}")
        return [int(r[0]) for r in conn.execute(sql, {**cutoffs, "ids": ids})]

    def purge(self, conn: Connection, ids: list[int], cutoffs: Cutoffs,
              d: Dialect = SQLITE) -> Removed:
        """Delete those of ``ids`` that are still expired (run in the writer's transaction);
        the rows deleted, cascades included, by table."""
        if not ids:
            return {}
        doomed = self.doomed(conn, d, json.dumps(ids), cutoffs)
        if not any(doomed.values()):
            return {}
        removed = cascaded(conn, doomed, d)
        if self.prepare is not None:
            self.prepare(conn, d, json.dumps(doomed.get(self.table, [])))
        for table, rows in doomed.items():
            if rows:
                conn.execute(f"DELETE FROM {table} WHERE id IN {d.json_values(integer=True)}",
                             (json.dumps(rows),))
        return removed


def plan(conn: Connection, rules: Iterable[Rule], cutoffs: Cutoffs,
         d: Dialect = SQLITE) -> Removed:
    """What purging with ``rules`` would delete now, cascades included, by table (reads
    only: the dry run of ``mwl-broker purge``)."""
    doomed: dict[str, set[int]] = {}
    for rule in rules:
        ids = json.dumps(rule.candidates(conn, cutoffs, d=d))
        for table, rows in rule.doomed(conn, d, ids, cutoffs).items():
            doomed.setdefault(table, set()).update(rows)
    return cascaded(conn, {t: sorted(rows) for t, rows in doomed.items()}, d)


def cascaded(conn: Connection, doomed: Doomed, d: Dialect = SQLITE) -> Removed:
    """The rows that go when ``doomed`` are deleted: they and every row ``ON DELETE CASCADE``
    takes with them, counted by table (tables without rows are left out)."""
    ids = {table: set(rows) for table, rows in doomed.items() if rows}
    children = _cascades(conn, d)
    ids_sql = d.json_values(integer=True)
    frontier = dict(ids)
    while frontier:  # ends: each round only adds rows not seen before, of finitely many
        found: dict[str, set[int]] = {}
        for parent, rows in frontier.items():
            for child, column, has_id in children.get(parent, []):
                if not has_id:
                    continue
                new = {int(r[0]) for r in conn.execute(
                    f"SELECT id FROM {child} WHERE {column} IN {ids_sql}",
                    (json.dumps(sorted(rows)),))} - ids.get(child, set())
                if new:
                    ids.setdefault(child, set()).update(new)
                    found.setdefault(child, set()).update(new)
        frontier = found
    removed = {table: len(rows) for table, rows in ids.items()}
    leaves: dict[str, list[tuple[str, str]]] = {}
    for parent, refs in children.items():
        for child, column, has_id in refs:
            if not has_id and ids.get(parent):
                leaves.setdefault(child, []).append((parent, column))
    for child, links in sorted(leaves.items()):
        where = " OR ".join(f"{column} IN {ids_sql}" for _, column in links)
        count = int(conn.execute(f"SELECT COUNT(*) FROM {child} WHERE {where}", [
            json.dumps(sorted(ids[parent])) for parent, _ in links]).fetchone()[0])
        if count:
            removed[child] = count
    return removed


def _cascades(conn: Connection, d: Dialect) -> dict[str, list[tuple[str, str, bool]]]:
    """parent table → (child table, its column, whether the child has an ``id``) for each
    ``ON DELETE CASCADE`` foreign key of the schema."""
    out: dict[str, list[tuple[str, str, bool]]] = {}
    for child, column, parent, has_id in d.cascades(conn):
        out.setdefault(parent, []).append((child, column, has_id))
    return out


def _doomed_steps(conn: Connection, d: Dialect, ids: str, cutoffs: Cutoffs) -> Doomed:
    """Ended steps no kept MPPS links to, and the procedures they leave without steps."""
    steps = STEPS.still_expired(conn, ids, cutoffs, d)
    if not steps:
        return {}
    doomed = json.dumps(steps)
    ids_sql = d.json_values(integer=True)
    procedures = [int(r[0]) for r in conn.execute(
        f"SELECT p.id FROM procedures p WHERE p.id IN (SELECT DISTINCT procedure_fk FROM "
        f"steps WHERE id IN {ids_sql}) AND NOT EXISTS (SELECT 1 FROM steps s WHERE "
        f"s.procedure_fk = p.id AND s.id NOT IN {ids_sql})", (doomed, doomed))]
    return {"steps": steps, "procedures": procedures}


def _doomed_own(rule_name: str) -> Callable[[Connection, Dialect, str, Cutoffs], Doomed]:
    """The rule's own rows that are still expired (what hangs on them goes by cascade)."""
    def doomed(conn: Connection, d: Dialect, ids: str, cutoffs: Cutoffs) -> Doomed:
        rule = next(r for r in RULES if r.name == rule_name)
        rows = rule.still_expired(conn, ids, cutoffs, d)
        return {rule.table: rows} if rows else {}
    return doomed


def _unlink_duplicates(conn: Connection, d: Dialect, ids: str) -> None:
    """The first kept resend of a deleted log row becomes the original of record, and the
    later resends its duplicates (one accepted original per control ID)."""
    ids_sql = d.json_values(integer=True)
    # the rows about to go leave the one-original index first (deleted in this transaction)
    conn.execute(f"UPDATE message_log SET outcome = 'purged' WHERE id IN {ids_sql}", (ids,))
    first = ("(SELECT MIN(r.id) FROM message_log r"
             " WHERE r.duplicate_of = message_log.duplicate_of)")
    conn.execute(f"UPDATE message_log SET duplicate_of = {first} WHERE duplicate_of IN"
                 f" {ids_sql} AND id > {first}", (ids,))
    conn.execute(f"UPDATE message_log SET duplicate_of = NULL WHERE duplicate_of IN {ids_sql}",
                 (ids,))
    # a kept replay of a deleted message stays a replay (replayed_by), without its link
    conn.execute(f"UPDATE message_log SET replay_of = NULL WHERE replay_of IN {ids_sql}",
                 (ids,))


#: an MPPS still kept: not ended, or ended after the MPPS cutoff
KEPT_MPPS = f"NOT (m.status IN {ENDED_MPPS} AND m.updated_at < :mpps)"
STEPS = Rule("steps", "steps", f"status IN {ENDED_STEPS} AND updated_at < :steps AND NOT "
             "EXISTS (SELECT 1 FROM mpps_steps ms JOIN mpps m ON m.id = ms.mpps_fk WHERE "
             f"ms.step_fk = steps.id AND {KEPT_MPPS})", _doomed_steps)
MPPS = Rule("mpps", "mpps", f"status IN {ENDED_MPPS} AND updated_at < :mpps",
            _doomed_own("mpps"))
MESSAGE_LOG = Rule("message_log", "message_log", "received_at < :message_log",
                   _doomed_own("message_log"), _unlink_duplicates)
#: messages the destination acknowledged (pending and dead letters are never purged)
OUTBOX_DELIVERED = Rule("outbox_delivered", "outbox",
                        "state = 'delivered' AND updated_at < :outbox_delivered",
                        _doomed_own("outbox_delivered"))

#: the worklist queries modalities made (the analyst's query log)
QUERY_LOG = Rule("query_log", "query_log", "queried_at < :query_log", _doomed_own("query_log"))

#: UPS event reports for web subscribers, delivered or not (one never connecting keeps none)
UPS_EVENTS = Rule("ups_events", "ups_events", "created_at < :ups_events",
                  _doomed_own("ups_events"))

#: in the order they run
RULES: tuple[Rule, ...] = (STEPS, MPPS, MESSAGE_LOG, OUTBOX_DELIVERED, QUERY_LOG, UPS_EVENTS)


class RetentionRepo:
    """Deletions of expired rows, in the writer's transaction."""

    def __init__(self, conn: Connection, dialect: Dialect = SQLITE) -> None:
        self.conn = conn
        self.dialect = dialect

    def purge(self, rule: Rule, ids: list[int], cutoffs: Cutoffs) -> Removed:
        """Delete the rows of ``ids`` that ``rule`` still finds expired, and what hangs on them."""
        return rule.purge(self.conn, ids, cutoffs, self.dialect)
