"""Workitems (scheduled steps seen as Unified Procedure Steps) and UPS subscriptions: SQL run
in the writer's transaction."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from broker.model.orders import Attrs, StepStatus
from broker.model.ups import UpsState, state_of, workitem_uid
from broker.model.worklist import Match, WorklistQuery
from broker.store.repo import Repo
from broker.store.worklist_query import build, rows

#: steps given their workitem UID per statement when UPS first names them
ASSIGN_CHUNK = 500


@dataclass(slots=True)
class Workitem:
    """A step as a workitem: its row, its UID, its state and the UPS-only part."""

    step_id: int
    uid: str
    status: StepStatus
    patient: Attrs
    procedure: Attrs
    step: Attrs
    transaction_uid: str = ""
    performer: str = ""
    attrs: Attrs | None = None
    cancel_requested: bool = False
    cancel_reason: str = ""

    @property
    def state(self) -> UpsState:
        return state_of(self.status.value)


@dataclass(frozen=True, slots=True)
class Subscription:
    ae_title: str
    workitem_uid: str  # '' for the global (and the filtered global) subscription
    filter: str  # '' unfiltered, else the matching keys as JSON
    deletion_lock: bool
    suspended: bool


WORKITEM = (
    "SELECT s.id, s.uid, s.status, pt.patient_id, pt.issuer, pt.attrs, p.study_uid, p.attrs,"
    " s.attrs, w.transaction_uid, w.performer, w.attrs, w.cancel_requested_at,"
    " w.cancel_reason FROM steps s JOIN procedures p ON p.id = s.procedure_fk"
    " JOIN patients pt ON pt.id = p.patient_fk LEFT JOIN workitems w ON w.step_fk = s.id")


def workitem_of(row: Any) -> Workitem:
    patient = {**json.loads(row[5]), "PatientID": row[3]}
    if row[4]:
        patient["IssuerOfPatientID"] = row[4]
    return Workitem(int(row[0]), str(row[1]), StepStatus(row[2]), patient,
                    {**json.loads(row[7]), "StudyInstanceUID": row[6]}, json.loads(row[8]),
                    str(row[9] or ""), str(row[10] or ""),
                    json.loads(row[11]) if row[11] else {}, row[12] is not None,
                    str(row[13] or ""))


def query_to_json(query: WorklistQuery) -> dict[str, Any]:
    """A worklist query as JSON (a filtered subscription keeps its query so)."""
    return {"include_hidden": query.include_hidden, "matches": [
        {"keyword": m.keyword, "kind": m.kind, "value": m.value, "low": m.low,
         "high": m.high, "values": list(m.values)} for m in query.matches]}


def query_from_json(data: dict[str, Any]) -> WorklistQuery:
    return WorklistQuery([Match(m["keyword"], m["kind"], m["value"], m["low"], m["high"],
                                tuple(m["values"])) for m in data.get("matches", [])],
                         bool(data.get("include_hidden", True)))


#: the filter of a row that leaves one workitem out of an AE's global subscription
OPTED_OUT = "-"
#: the step of a workitem UID (the uid != '' term lets the partial unique index serve it)
BY_UID = " WHERE s.uid = ? AND s.uid != ''"


class UpsRepo(Repo):
    def assign_uids(self) -> int:
        """Give every step still without a workitem UID its UID; returns how many."""
        done = 0
        while True:
            rows = self.conn.execute(
                "SELECT id, created_at FROM steps WHERE uid = '' ORDER BY id LIMIT ?",
                (ASSIGN_CHUNK,)).fetchall()
            if not rows:
                return done
            self.conn.executemany("UPDATE steps SET uid = ? WHERE id = ? AND uid = ''", [
                (workitem_uid(int(r[0]), float(r[1])), int(r[0])) for r in rows])
            done += len(rows)

    def workitem(self, uid: str) -> Workitem | None:
        """The workitem of ``uid`` (steps not yet named by UPS get their UIDs first)."""
        row = self.conn.execute(WORKITEM + BY_UID, (uid,)).fetchone()
        if row is None and self.assign_uids():
            row = self.conn.execute(WORKITEM + BY_UID, (uid,)).fetchone()
        return workitem_of(row) if row is not None else None

    def workitems_of_steps(self, step_ids: list[int]) -> list[Workitem]:
        if not step_ids:
            return []
        self.assign_uids()
        rows = self.conn.execute(
            WORKITEM + f" WHERE s.id IN {self.dialect.json_values(integer=True)}"
            " ORDER BY s.id", (json.dumps(step_ids),)).fetchall()
        return [workitem_of(r) for r in rows]

    def set_uid(self, step_id: int, uid: str) -> None:
        self.conn.execute("UPDATE steps SET uid = ? WHERE id = ?", (uid, step_id))

    def save(self, item: Workitem) -> None:
        """The UPS-only part of ``item`` (its Transaction UID, performer, attributes,
        cancellation request)."""
        self.conn.execute(
            "INSERT INTO workitems (step_fk, transaction_uid, performer, attrs,"
            " cancel_requested_at, cancel_reason, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (step_fk) DO UPDATE SET"
            " transaction_uid = excluded.transaction_uid, performer = excluded.performer,"
            " attrs = excluded.attrs, cancel_requested_at = excluded.cancel_requested_at,"
            " cancel_reason = excluded.cancel_reason, updated_at = excluded.updated_at",
            (item.step_id, item.transaction_uid, item.performer,
             json.dumps(item.attrs or {}, ensure_ascii=False),
             self.now if item.cancel_requested else None, item.cancel_reason, self.now,
             self.now))

    # -- subscriptions --------------------------------------------------------------------
    def subscribe(self, ae_title: str, workitem_uid: str, filter_json: str,
                  deletion_lock: bool) -> None:
        if workitem_uid and filter_json != OPTED_OUT:  # subscribing again ends an opt-out
            self.conn.execute("DELETE FROM ups_subscriptions WHERE ae_title = ? AND"
                              " workitem_uid = ? AND filter = ?",
                              (ae_title, workitem_uid, OPTED_OUT))
        self.conn.execute(
            "INSERT INTO ups_subscriptions (ae_title, workitem_uid, filter, deletion_lock,"
            " suspended, created_at) VALUES (?, ?, ?, ?, 0, ?) ON CONFLICT (ae_title,"
            " workitem_uid, filter) DO UPDATE SET deletion_lock = excluded.deletion_lock,"
            " suspended = 0", (ae_title, workitem_uid, filter_json, int(deletion_lock),
                               self.now))

    def unsubscribe(self, ae_title: str, workitem_uid: str | None) -> int:
        """End the subscriptions of ``ae_title`` to ``workitem_uid`` (the global UID: the
        global ones; None: every one of it); returns how many."""
        if workitem_uid is None:
            cur = self.conn.execute("DELETE FROM ups_subscriptions WHERE ae_title = ?",
                                    (ae_title,))
        else:
            cur = self.conn.execute("DELETE FROM ups_subscriptions WHERE ae_title = ? AND"
                                    " workitem_uid = ?", (ae_title, workitem_uid))
        return int(cur.rowcount or 0)

    def suspend_global(self, ae_title: str) -> int:
        """Stop new workitems from being subscribed for ``ae_title`` (its existing
        workitem subscriptions stay)."""
        cur = self.conn.execute("UPDATE ups_subscriptions SET suspended = 1 WHERE"
                                " ae_title = ? AND workitem_uid = ''", (ae_title,))
        return int(cur.rowcount or 0)

    def subscriptions(self, workitem_uid: str) -> list[Subscription]:
        """The subscriptions an event of ``workitem_uid`` goes to: to it, and the global
        ones not suspended."""
        rows = self.conn.execute(
            "SELECT ae_title, workitem_uid, filter, deletion_lock, suspended FROM"
            " ups_subscriptions WHERE workitem_uid = ? OR (workitem_uid = '' AND suspended ="
            " 0) ORDER BY id", (workitem_uid,)).fetchall()
        subs = [Subscription(str(r[0]), str(r[1]), str(r[2]), bool(r[3]), bool(r[4]))
                for r in rows]
        out = {s.ae_title for s in subs if s.workitem_uid and s.filter == OPTED_OUT}
        return [s for s in subs if s.ae_title not in out]

    def watches(self, ae_title: str, workitem_uid: str) -> bool:
        """Whether ``ae_title`` gets the workitem's reports now (any subscription)."""
        return any(s.ae_title == ae_title for s in self.subscriptions(workitem_uid))

    def open_workitems(self, limit: int) -> list[Workitem]:
        """Workitems still to be done (SCHEDULED or IN PROGRESS), earliest start first."""
        self.assign_uids()
        rows = self.conn.execute(
            WORKITEM + " WHERE s.status IN ('SCHEDULED', 'ARRIVED', 'READY', 'STARTED')"
            " ORDER BY s.start_dt, s.id LIMIT ?", (limit,)).fetchall()
        return [workitem_of(r) for r in rows]

    def matches(self, query: dict[str, Any], step_id: int) -> bool:
        """Whether the step matches a filtered subscription's query (``query_to_json``),
        by the worklist's own SQL."""
        q = query_from_json(query)
        q.step_ids = (step_id,)
        statement = build(q, self.dialect)
        cursor = self.conn.execute(statement.sql, statement.params)
        return any(row.step_id == step_id for row in rows(cursor, statement.filters))

    def states_of_studies(self, study_uids: list[str]) -> dict[int, tuple[str, str]]:
        """(status, station AE titles) of each step of the procedures of ``study_uids``."""
        rows = self.conn.execute(
            f"SELECT s.id, s.status, (SELECT {self.dialect.string_agg('st.station_aet', ',')}"
            " FROM step_stations st WHERE st.step_fk = s.id) FROM steps s JOIN procedures p"
            f" ON p.id = s.procedure_fk WHERE p.study_uid IN {self.dialect.json_values()}",
            (json.dumps(study_uids),)).fetchall()
        return {int(r[0]): (str(r[1]), ",".join(sorted(str(r[2] or "").split(","))))
                for r in rows}

    def subscribing_aes(self) -> list[str]:
        """Every AE title with a subscription (of any kind)."""
        return [str(r[0]) for r in self.conn.execute(
            "SELECT DISTINCT ae_title FROM ups_subscriptions ORDER BY ae_title").fetchall()]

    def subscribes_globally(self, ae_title: str) -> bool:
        """Whether ``ae_title`` holds a global (filtered or not) subscription."""
        return self.conn.execute(
            "SELECT 1 FROM ups_subscriptions WHERE ae_title = ? AND workitem_uid = ''"
            " LIMIT 1", (ae_title,)).fetchone() is not None

    def has_subscriptions(self) -> bool:
        return self.conn.execute("SELECT 1 FROM ups_subscriptions LIMIT 1").fetchone() \
            is not None

    def locked(self, workitem_uid: str) -> bool:
        """Whether a subscriber holds a deletion lock on the workitem (retention keeps it)."""
        return self.conn.execute(
            "SELECT 1 FROM ups_subscriptions WHERE workitem_uid = ? AND deletion_lock = 1"
            " LIMIT 1", (workitem_uid,)).fetchone() is not None

    # -- event reports for web subscribers ------------------------------------------------
    def add_event(self, receiving_ae: str, workitem_uid: str, event_type: int,
                  payload: str) -> int:
        """An event report for a web (UPS-RS) subscriber, sent when its WebSocket is open."""
        row = self.conn.execute(
            "INSERT INTO ups_events (created_at, receiving_ae, sop_instance_uid, event_type,"
            " payload) VALUES (?, ?, ?, ?, ?) RETURNING id",
            (self.now, receiving_ae, workitem_uid, event_type, payload)).fetchone()
        return int(row[0])

    def events_delivered(self, ids: list[int]) -> int:
        """Mark event reports sent (retention removes them later)."""
        if not ids:
            return 0
        cur = self.conn.execute(
            "UPDATE ups_events SET delivered_at = ? WHERE delivered_at IS NULL AND id IN"
            f" {self.dialect.json_values(integer=True)}", (self.now, json.dumps(ids)))
        return int(cur.rowcount or 0)
