"""Reads of the integration analyst's tools: the query log, the steps of an order, merged
patients, stored messages to replay, and the order's timeline (plain JSON-ready rows)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from broker.store import query_log, timeline
from broker.store.connection import AsyncSql
from broker.store.dialect import Dialect

Row = dict[str, Any]


class AnalystReader:
    def __init__(self, conn: AsyncSql, dialect: Dialect) -> None:
        self._conn = conn
        self._dialect = dialect

    async def queries(self, station: str = "", since: float = 0.0, until: float = 0.0,
                      outcome: str = "", limit: int = 100) -> list[Row]:
        return await query_log.queries(self._conn, station, since, until, outcome, limit)

    async def query(self, pk: int) -> Row | None:
        return await query_log.query_entry(self._conn, pk)

    async def last_query(self, station: str) -> Row | None:
        return await query_log.last_query(self._conn, station)

    async def last_seen(self) -> dict[str, Row]:
        return await query_log.last_seen(self._conn)

    async def timeline(self, key: str) -> list[Row]:
        return await timeline.timeline(self._conn, key, self._dialect)

    async def steps_of(self, key: str) -> list[Row]:
        """The steps of the procedures whose Study Instance UID or accession is ``key``,
        with the station AE titles they are scheduled on."""
        rows = await self._conn.rows(
            f"SELECT s.id, s.sps_id, s.status, s.modality, s.start_date, s.start_time,"
            f" p.study_uid, p.accession, pt.patient_id,"
            f" (SELECT {self._dialect.string_agg('st.station_aet', chr(92))} FROM"
            f" step_stations st WHERE st.step_fk = s.id) AS stations"
            f" FROM steps s JOIN procedures p ON p.id = s.procedure_fk"
            f" JOIN patients pt ON pt.id = p.patient_fk"
            f" WHERE p.study_uid = ? OR p.accession = ? ORDER BY s.id LIMIT 200", (key, key))
        for r in rows:
            r["stations"] = r["stations"].split("\\") if r["stations"] else []
        return rows

    async def merges(self, patient_ids: Sequence[str]) -> dict[str, str]:
        """Patient ID → the patient ID it was merged into, for those of ``patient_ids``
        that were merged (the end of the merge chain is followed by the SCP's resolve; one
        step is enough to name it)."""
        out: dict[str, str] = {}
        for pid in patient_ids:
            rows = await self._conn.rows(
                "SELECT s.patient_id FROM patients p JOIN patients s ON s.id = p.merged_into"
                " WHERE p.patient_id = ? LIMIT 1", (pid,))
            if rows:
                out[pid] = str(rows[0]["patient_id"])
        return out

    async def messages_about(self, key: str, limit: int = 20) -> list[Row]:
        """The newest messages that named ``key`` as accession number (any outcome)."""
        return await self._conn.rows(
            "SELECT id, received_at, control_id, message_type, outcome, error FROM message_log"
            " WHERE accession = ? ORDER BY id DESC LIMIT ?", (key, limit))

    async def stored_message(self, pk: int) -> Row | None:
        """A logged message's bytes, charset and first address (what a replay re-processes)."""
        rows = await self._conn.rows(
            "SELECT id, peer, control_id, message_type, charset, outcome, replay_of, raw"
            " FROM message_log WHERE id = ?", (pk,))
        if not rows:
            return None
        row = rows[0]
        row["raw"] = bytes(row["raw"])
        return row

    async def replays_of(self, pk: int) -> list[Row]:
        return await self._conn.rows(
            "SELECT id, received_at, replayed_by, replay_reason, outcome, error FROM"
            " message_log WHERE replay_of = ? ORDER BY id", (pk,))
