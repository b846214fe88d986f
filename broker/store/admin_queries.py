"""Reads of the admin console and REST API, on an asyncio read connection (the event loop
never waits for the database). Every result is plain JSON-ready data."""

from __future__ import annotations

import codecs
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from broker.store.alert_queries import WorkflowStats, senders_last_seen, workflow_stats
from broker.store.connection import AsyncSql
from broker.store.dialect import Dialect

Row = dict[str, Any]
Conn = AsyncSql

#: tables of later migrations (storage commitment, IAN) that the history shows when present
OPTIONAL_TABLES = ("commitments", "commitment_instances", "ian", "instance_availability",
                   "completions")


async def _rows(conn: Conn, sql: str, args: Any = ()) -> list[Row]:
    return await conn.rows(sql, args)


async def tables(conn: Conn, d: Dialect) -> set[str]:
    return {r["name"] for r in await _rows(conn, d.tables())}


# -- worklist --------------------------------------------------------------------------------
@dataclass
class WorklistFilter:
    date: str  # YYYYMMDD
    station: str = ""
    text: str = ""  # part of the patient's name, or a whole patient ID or accession number
    status: str = ""
    limit: int = 500


@cache
def worklist_sql(d: Dialect) -> str:
    return f"""
SELECT s.id AS step_id, s.sps_id, s.status, s.modality, s.start_date, s.start_time,
       s.station_name, s.location,
       {d.json_text("s.attrs", "ScheduledProcedureStepDescription")} AS description,
       (SELECT {d.string_agg("st.station_aet", chr(92))} FROM step_stations st
         WHERE st.step_fk = s.id) AS stations,
       p.study_uid, p.accession, p.requested_procedure_id, p.priority,
       pt.patient_id, pt.issuer, pt.name AS patient_name, pt.birth_date, pt.sex
FROM steps s JOIN procedures p ON p.id = s.procedure_fk JOIN patients pt ON pt.id = p.patient_fk
WHERE s.start_date = ?"""


async def worklist(conn: Conn, f: WorklistFilter, d: Dialect) -> list[Row]:
    """The steps of one day, with their procedure and patient, by start time."""
    sql, args = worklist_sql(d), [f.date]
    if f.status:
        sql += " AND s.status = ?"
        args.append(f.status)
    if f.station:
        sql += (" AND EXISTS (SELECT 1 FROM step_stations st WHERE st.step_fk = s.id"
                " AND st.station_aet = ?)")
        args.append(f.station)
    if f.text:
        name = "lower(replace(pt.name, '^', ' '))"
        sql += (f" AND ({d.position('lower(?)', name)} > 0"
                " OR pt.patient_id = ? OR p.accession = ?)")
        args += [f.text.replace("^", " "), f.text, f.text]
    rows = await _rows(conn, sql + " ORDER BY s.start_dt, s.id LIMIT ?", [*args, f.limit])
    for r in rows:
        r["stations"] = r["stations"].split("\\") if r["stations"] else []
        r["description"] = r["description"] or ""
    return rows


# -- a procedure's history -------------------------------------------------------------------
async def procedure_history(conn: Conn, key: str, d: Dialect) -> list[Row]:
    """Everything known of the procedures whose Study Instance UID or accession is ``key``."""
    procedures = await _rows(conn, """
        SELECT p.id, p.study_uid, p.accession, p.requested_procedure_id, p.placer_order,
               p.filler_order, p.priority, p.order_control, p.attrs, p.created_at, p.updated_at,
               pt.patient_id, pt.issuer, pt.name AS patient_name, pt.birth_date, pt.sex
        FROM procedures p JOIN patients pt ON pt.id = p.patient_fk
        WHERE p.study_uid = ? OR p.accession = ? ORDER BY p.id LIMIT 20""", (key, key))
    present = await tables(conn, d)
    for p in procedures:
        p["attrs"] = json.loads(p["attrs"])
        p["steps"] = await _steps(conn, p["id"], d)
        p["ups_global_subscribers"] = [x["ae_title"] for x in await _rows(
            conn, "SELECT ae_title FROM ups_subscriptions WHERE workitem_uid = '' AND"
            " suspended = 0 ORDER BY ae_title")]
        p["messages_in"] = await _rows(conn, """
            SELECT id, received_at, sender_application, sender_facility, control_id,
                   message_type, outcome, duplicate_of, error
            FROM message_log WHERE accession = ? ORDER BY id""",
            (p["accession"],)) if p["accession"] else []
        p["mpps"] = await _mpps_of_procedure(conn, p["id"], d)
        mpps_ids = [m["id"] for m in p["mpps"]]
        p.update(await _closing_rows(conn, present, p, mpps_ids))
        p["messages_out"] = await _rows(conn, """
            SELECT id, destination, control_id, message_type, state, attempts, last_error,
                   created_at, updated_at FROM outbox WHERE order_key = ? ORDER BY id""",
            (p["study_uid"],))
    return procedures


async def _steps(conn: Conn, procedure_fk: int, d: Dialect) -> list[Row]:
    rows = await _rows(conn, f"""
        SELECT s.id, s.sps_id, s.status, s.modality, s.start_date, s.start_time,
               s.station_name, s.location, s.attrs, s.created_at, s.updated_at, s.uid,
               w.performer AS ups_performer, w.cancel_requested_at AS ups_cancel_requested_at,
               w.cancel_reason AS ups_cancel_reason,
               (SELECT {d.string_agg("st.station_aet", chr(92))} FROM step_stations st
                 WHERE st.step_fk = s.id) AS stations
        FROM steps s LEFT JOIN workitems w ON w.step_fk = s.id
        WHERE s.procedure_fk = ? ORDER BY s.id""", (procedure_fk,))
    for r in rows:
        r["attrs"] = json.loads(r["attrs"])
        r["stations"] = r["stations"].split("\\") if r["stations"] else []
        r["ups_subscribers"] = [x["ae_title"] for x in await _rows(
            conn, "SELECT ae_title FROM ups_subscriptions WHERE workitem_uid = ? AND"
            " filter != '-' ORDER BY ae_title", (r["uid"],))] if r["uid"] else []
    return rows


async def _mpps_of_procedure(conn: Conn, procedure_fk: int, d: Dialect) -> list[Row]:
    rows = await _rows(conn, f"""
        SELECT m.id, m.sop_instance_uid, m.status, m.calling_ae, m.unscheduled, m.dataset,
               m.created_at, m.updated_at,
               (SELECT {d.string_agg("s2.sps_id", ", ")} FROM mpps_steps ms2
                  JOIN steps s2 ON s2.id = ms2.step_fk WHERE ms2.mpps_fk = m.id) AS sps_ids
        FROM mpps m WHERE m.id IN (SELECT ms.mpps_fk FROM mpps_steps ms
                                   JOIN steps s ON s.id = ms.step_fk WHERE s.procedure_fk = ?)
        ORDER BY m.id""", (procedure_fk,))
    for r in rows:
        r["dataset"] = json.loads(r["dataset"])
        r["unscheduled"] = bool(r["unscheduled"])
    return rows


async def _closing_rows(conn: Conn, present: set[str], procedure: Row,
                        mpps_ids: list[int]) -> Row:
    """Storage commitment, IAN and completion rows, for the tables this database has."""
    out: Row = {"commitments": [], "ian": [], "availability": {}, "completions": []}
    marks = ", ".join("?" * len(mpps_ids))
    if "commitments" in present and mpps_ids:
        out["commitments"] = await _rows(
            conn, f"SELECT * FROM commitments WHERE mpps_fk IN ({marks}) ORDER BY id", mpps_ids)
        if "commitment_instances" in present:
            for c in out["commitments"]:
                counts = await _rows(conn, "SELECT state, COUNT(*) AS n FROM "
                                     "commitment_instances WHERE commitment_fk = ? "
                                     "GROUP BY state ORDER BY state", (c["id"],))
                c["instances"] = {r["state"]: r["n"] for r in counts}
    if "ian" in present:
        rows = await _rows(conn, "SELECT * FROM ian WHERE study_uid = ? OR procedure_fk = ?"
                           " ORDER BY id", (procedure["study_uid"], procedure["id"]))
        out["ian"] = [{k: v for k, v in r.items() if k != "dataset"} for r in rows]
    if "instance_availability" in present:
        counts = await _rows(conn, "SELECT availability, COUNT(*) AS n FROM "
                             "instance_availability WHERE study_uid = ? GROUP BY availability"
                             " ORDER BY availability", (procedure["study_uid"],))
        out["availability"] = {r["availability"]: r["n"] for r in counts}
    if "completions" in present and mpps_ids:
        out["completions"] = await _rows(
            conn, f"SELECT * FROM completions WHERE mpps_fk IN ({marks})", mpps_ids)
    return out


# -- message log -----------------------------------------------------------------------------
MESSAGE_COLUMNS = ("id, received_at, peer, sender_application, sender_facility, control_id,"
                   " message_type, charset, outcome, duplicate_of, error, patient_id, accession")


async def messages(conn: Conn, text: str = "", outcome: str = "",
                   limit: int = 100) -> list[Row]:
    """Newest first; ``text`` is a control ID, a patient ID or an accession number."""
    sql, args = f"SELECT {MESSAGE_COLUMNS} FROM message_log", []
    conditions = []
    if text:
        conditions.append("(control_id = ? OR patient_id = ? OR accession = ?)")
        args += [text, text, text]
    if outcome:
        conditions.append("outcome = ?")
        args.append(outcome)
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    return await _rows(conn, sql + " ORDER BY id DESC LIMIT ?", [*args, limit])


async def message(conn: Conn, pk: int) -> Row | None:
    """One logged message with its raw text (decoded as it was read) and its ACK."""
    rows = await _rows(conn, f"SELECT {MESSAGE_COLUMNS}, ack, raw, replay_of, replayed_by,"
                       " replay_reason FROM message_log WHERE id = ?", (pk,))
    if not rows:
        return None
    row = rows[0]
    row["raw"] = _decode(bytes(row["raw"]), row["charset"])
    return row


def _decode(raw: bytes, codec: str) -> str:
    try:
        codecs.lookup(codec)
    except LookupError:
        codec = "latin-1"
    return raw.decode(codec, errors="replace")


# -- outbox ----------------------------------------------------------------------------------
OUTBOX_LIST_COLUMNS = ("id, destination, order_key, control_id, message_type, state, attempts,"
                       " next_attempt_at, last_error, created_at, updated_at")


async def outbox(conn: Conn, state: str = "", limit: int = 200) -> list[Row]:
    sql, args = f"SELECT {OUTBOX_LIST_COLUMNS} FROM outbox", []
    if state:
        sql += " WHERE state = ?"
        args.append(state)
    return await _rows(conn, sql + " ORDER BY id DESC LIMIT ?", [*args, limit])


async def outbox_entry(conn: Conn, pk: int) -> Row | None:
    rows = await _rows(conn, f"SELECT {OUTBOX_LIST_COLUMNS}, payload, ack FROM outbox"
                       " WHERE id = ?", (pk,))
    return rows[0] if rows else None


@dataclass
class DestinationStats:
    depth: int  # pending messages
    dead: int
    oldest_pending_at: float | None


@dataclass
class OutboxStats:
    depth: int  # pending messages
    dead: int
    oldest_pending_at: float | None
    by_destination: dict[str, DestinationStats] = field(default_factory=dict)


async def outbox_stats(conn: Conn) -> OutboxStats:
    """Pending and dead messages by destination, and over all, from the rows the outbox's
    (state, next attempt) index finds: cheap enough for every scrape."""
    rows = await _rows(conn, """
        SELECT destination,
               SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END) AS depth,
               SUM(CASE WHEN state = 'dead' THEN 1 ELSE 0 END) AS dead,
               MIN(CASE WHEN state = 'pending' THEN created_at END) AS oldest
        FROM outbox WHERE state IN ('pending', 'dead') GROUP BY destination
        ORDER BY destination""")
    by = {r["destination"]: DestinationStats(int(r["depth"]), int(r["dead"]),
                                             _float(r["oldest"])) for r in rows}
    oldest = [d.oldest_pending_at for d in by.values() if d.oldest_pending_at is not None]
    return OutboxStats(sum(d.depth for d in by.values()), sum(d.dead for d in by.values()),
                       min(oldest) if oldest else None, by)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


# -- brokers sharing the database ----------------------------------------------------------
async def cluster(conn: Conn, d: Dialect, window: float) -> Row:
    """Every broker on record (alive: seen within ``window`` s) and who owns each lane."""
    now = d.now()
    nodes = await _rows(conn, f"""
        SELECT node_id, host, mllp_port, dicom_port, admin_port, version, started_at, seen_at,
               stopped_at, {now} - seen_at AS seen_seconds_ago, clock_offset,
               CASE WHEN stopped_at IS NULL AND seen_at >= {now} - ? THEN 1 ELSE 0 END AS alive
        FROM nodes ORDER BY node_id""", (window,))
    lanes = await _rows(conn, f"""
        SELECT destination AS lane, owner, fence, taken_at, expires_at,
               CASE WHEN expires_at >= {now} THEN 1 ELSE 0 END AS held
        FROM lanes ORDER BY destination""")
    for n in nodes:
        n["alive"] = bool(n["alive"])
    for lane in lanes:
        lane["held"] = bool(lane["held"])
    return {"nodes": nodes, "lanes": lanes}


class AdminReader:
    """The admin side's read connection and its reads; errors are the store's own."""

    def __init__(self, conn: Conn, dialect: Dialect) -> None:
        self._conn = conn
        self._dialect = dialect

    async def close(self) -> None:
        await self._conn.close()

    async def worklist(self, f: WorklistFilter) -> list[Row]:
        return await worklist(self._conn, f, self._dialect)

    async def procedure_history(self, key: str) -> list[Row]:
        return await procedure_history(self._conn, key, self._dialect)

    async def messages(self, text: str = "", outcome: str = "", limit: int = 100) -> list[Row]:
        return await messages(self._conn, text, outcome, limit)

    async def message(self, pk: int) -> Row | None:
        return await message(self._conn, pk)

    async def outbox(self, state: str = "", limit: int = 200) -> list[Row]:
        return await outbox(self._conn, state, limit)

    async def outbox_entry(self, pk: int) -> Row | None:
        return await outbox_entry(self._conn, pk)

    async def outbox_stats(self) -> OutboxStats:
        return await outbox_stats(self._conn)

    async def cluster(self, window: float) -> Row:
        return await cluster(self._conn, self._dialect, window)

    @property
    def conn(self) -> Conn:
        """The connection (other readers share it: broker.store.analyst_queries)."""
        return self._conn

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    async def workflow_stats(self, late_minutes: Sequence[int]) -> WorkflowStats:
        return await workflow_stats(self._conn, self._dialect, late_minutes)

    async def senders_last_seen(self, since: float) -> list[tuple[str, str, float]]:
        return await senders_last_seen(self._conn, since)
