"""The repositories' common base, and the rows of performed procedure steps and of the outbox."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from broker.model.orders import Attrs, StepStatus
from broker.store.connection import Connection
from broker.store.dialect import Dialect
from broker.store.sqlite.dialect import SQLITE


def _dump(attrs: Attrs) -> str:
    return json.dumps(attrs, ensure_ascii=False, separators=(",", ":"))


def _text(attrs: Attrs, keyword: str) -> str:
    value = attrs.get(keyword, "")
    if isinstance(value, list):
        return "\\".join(str(v) for v in value if not isinstance(v, dict))
    return str(value)


class Repo:
    """A repository: SQL run inside the caller's transaction, on one clock (``now``)."""

    def __init__(self, conn: Connection, now: float | None = None,
                 dialect: Dialect = SQLITE) -> None:
        self.conn = conn
        self.now = now if now is not None else time.time()
        self.dialect = dialect

    def set_step_status(self, pk: int, status: StepStatus) -> None:
        self.conn.execute("UPDATE steps SET status = ?, updated_at = ? WHERE id = ?",
                          (status.value, self.now, pk))


@dataclass(slots=True)
class MppsRow:
    id: int
    sop_instance_uid: str
    status: str
    dataset: dict[str, Any]
    unscheduled: bool


class MppsRepo(Repo):
    """Rows of performed procedure steps and their links to scheduled steps."""

    def mpps(self, sop_instance_uid: str) -> MppsRow | None:
        row = self.conn.execute(
            "SELECT id, sop_instance_uid, status, dataset, unscheduled FROM mpps"
            " WHERE sop_instance_uid = ?", (sop_instance_uid,)).fetchone()
        return MppsRow(row[0], row[1], row[2], json.loads(row[3]), bool(row[4])) if row else None

    def insert_mpps(self, sop_instance_uid: str, status: str, dataset: dict[str, Any],
                    calling_ae: str, unscheduled: bool) -> int:
        row = self.conn.execute(
            "INSERT INTO mpps (sop_instance_uid, status, calling_ae, unscheduled, dataset,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (sop_instance_uid, status, calling_ae, int(unscheduled),
             json.dumps(dataset, separators=(",", ":")), self.now, self.now)).fetchone()
        return int(row[0])

    def update_mpps(self, pk: int, status: str, dataset: dict[str, Any]) -> None:
        self.conn.execute(
            "UPDATE mpps SET status = ?, dataset = ?, updated_at = ? WHERE id = ?",
            (status, json.dumps(dataset, separators=(",", ":")), self.now, pk))

    def link(self, mpps_pk: int, step_pks: list[int]) -> None:
        self.conn.executemany("INSERT INTO mpps_steps (mpps_fk, step_fk) VALUES (?, ?)"
                              " ON CONFLICT DO NOTHING", [(mpps_pk, s) for s in step_pks])

    def linked_steps(self, mpps_pk: int) -> list[int]:
        return [r[0] for r in self.conn.execute(
            "SELECT step_fk FROM mpps_steps WHERE mpps_fk = ? ORDER BY step_fk", (mpps_pk,))]

    def steps_of_study(self, study_uid: str, sps_id: str = "") -> list[int]:
        return self._steps_where("p.study_uid", study_uid, sps_id)

    def steps_of_accession(self, accession: str, sps_id: str = "") -> list[int]:
        return self._steps_where("p.accession", accession, sps_id)

    def _steps_where(self, column: str, value: str, sps_id: str) -> list[int]:
        """Steps of the procedures whose ``column`` (a constant of this class) is ``value``."""
        sql = ("SELECT s.id FROM steps s JOIN procedures p ON p.id = s.procedure_fk"
               f" WHERE {column} = ?")
        args: list[Any] = [value]
        if sps_id:
            sql += " AND s.sps_id = ?"
            args.append(sps_id)
        return [r[0] for r in self.conn.execute(sql + " ORDER BY s.id", args)]

    def studies_of(self, sop_instance_uid: str) -> list[str]:
        """Study Instance UIDs of the scheduled steps an MPPS covers."""
        return [str(r[0]) for r in self.conn.execute(
            "SELECT DISTINCT p.study_uid FROM mpps m JOIN mpps_steps ms ON ms.mpps_fk = m.id"
            " JOIN steps s ON s.id = ms.step_fk JOIN procedures p ON p.id = s.procedure_fk"
            " WHERE m.sop_instance_uid = ? ORDER BY 1", (sop_instance_uid,))]

    def step_context(self, step_pk: int) -> tuple[Attrs, Attrs, Attrs]:
        """(patient, procedure, step) attributes of a step, keys included."""
        row = self.conn.execute(
            "SELECT pt.patient_id, pt.issuer, pt.attrs, p.study_uid, p.attrs, s.attrs"
            " FROM steps s JOIN procedures p ON p.id = s.procedure_fk"
            " JOIN patients pt ON pt.id = p.patient_fk WHERE s.id = ?", (step_pk,)).fetchone()
        patient = {**json.loads(row[2]), "PatientID": row[0], "IssuerOfPatientID": row[1]}
        procedure = {**json.loads(row[4]), "StudyInstanceUID": row[3]}
        return patient, procedure, json.loads(row[5])

    def step_statuses(self, step_pks: list[int]) -> dict[int, StepStatus]:
        if not step_pks:
            return {}
        marks = ", ".join("?" * len(step_pks))
        return {r[0]: StepStatus(r[1]) for r in self.conn.execute(
            f"SELECT id, status FROM steps WHERE id IN ({marks})", step_pks)}


@dataclass(slots=True)
class OutboxRow:
    id: int
    destination: str
    order_key: str
    control_id: str
    message_type: str
    payload: str
    state: str
    attempts: int
    next_attempt_at: float
    last_error: str


OUTBOX_COLUMNS = ("id, destination, order_key, control_id, message_type, payload, state,"
                  " attempts, next_attempt_at, last_error")


class OutboxRepo(Repo):
    def enqueue(self, destination: str, order_key: str, control_id: str, message_type: str,
                payload: str, due_at: float | None = None) -> int:
        row = self.conn.execute(
            "INSERT INTO outbox (destination, order_key, control_id, message_type, payload,"
            " next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " RETURNING id", (destination, order_key, control_id, message_type, payload,
                              self.now if due_at is None else due_at, self.now,
                              self.now)).fetchone()
        self.dialect.notify(self.conn, "mwl_outbox")  # wakes the lane's owner, at commit
        return int(row[0])

    def delivered(self, pk: int, ack: str) -> None:
        self.conn.execute(
            "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, ack = ?,"
            " last_error = '', updated_at = ? WHERE id = ?", (ack, self.now, pk))

    def dead(self, pk: int, reason: str, ack: str = "") -> None:
        self.conn.execute(
            "UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = ?, ack = ?,"
            " updated_at = ? WHERE id = ?", (reason, ack, self.now, pk))

    def retry_later(self, pk: int, reason: str, when: float) -> None:
        self.conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?,"
            " updated_at = ? WHERE id = ? AND state = 'pending'", (reason, when, self.now, pk))

    def requeue(self, pk: int | None = None) -> int:
        """Dead (or one given) entries back to pending, due now."""
        sql = ("UPDATE outbox SET state = 'pending', next_attempt_at = ?, updated_at = ?"
               " WHERE state = 'dead'")
        args: list[Any] = [self.now, self.now]
        if pk is not None:
            sql = ("UPDATE outbox SET state = 'pending', next_attempt_at = ?, updated_at = ?"
                   " WHERE id = ? AND state != 'delivered'")
            args.append(pk)
        return self.dialect.changed(self.conn, self.conn.execute(sql, args))

    def purge(self, state: str, older_than: float) -> int:
        return self.dialect.changed(self.conn, self.conn.execute(
            "DELETE FROM outbox WHERE state = ? AND updated_at < ?", (state, older_than)))


def outbox_entries(conn: Connection, state: str = "", limit: int = 100
                   ) -> list[OutboxRow]:
    sql = f"SELECT {OUTBOX_COLUMNS} FROM outbox"
    args: list[Any] = []
    if state:
        sql += " WHERE state = ?"
        args.append(state)
    return [OutboxRow(*r) for r in conn.execute(sql + " ORDER BY id DESC LIMIT ?",
                                                 [*args, limit])]
