"""Row-level operations on patients, requested procedures, steps and the message log."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from broker.model.orders import Attrs, PatientKey, StepStatus
from broker.model.worklist import name_keys


def _dump(attrs: Attrs) -> str:
    return json.dumps(attrs, ensure_ascii=False, separators=(",", ":"))


def _text(attrs: Attrs, keyword: str) -> str:
    value = attrs.get(keyword, "")
    if isinstance(value, list):
        return "\\".join(str(v) for v in value if not isinstance(v, dict))
    return str(value)


@dataclass(slots=True)
class PatientRow:
    id: int
    key: PatientKey
    attrs: Attrs
    merged_into: int | None


@dataclass(slots=True)
class ProcedureRow:
    id: int
    patient_fk: int
    study_uid: str
    attrs: Attrs


@dataclass(slots=True)
class StepRow:
    id: int
    sps_id: str
    status: StepStatus
    attrs: Attrs


class Repo:
    """SQL for the workflow; every method runs inside the caller's transaction."""

    def __init__(self, conn: sqlite3.Connection, now: float | None = None) -> None:
        self.conn = conn
        self.now = now if now is not None else time.time()

    # -- patients ---------------------------------------------------------------------------
    def patient(self, key: PatientKey) -> PatientRow | None:
        row = self.conn.execute(
            "SELECT id, patient_id, issuer, attrs, merged_into FROM patients "
            "WHERE patient_id = ? AND issuer = ?", (key.patient_id, key.issuer)).fetchone()
        return _patient(row) if row else None

    def patient_by_id(self, pk: int) -> PatientRow:
        row = self.conn.execute(
            "SELECT id, patient_id, issuer, attrs, merged_into FROM patients WHERE id = ?",
            (pk,)).fetchone()
        return _patient(row)

    def insert_patient(self, key: PatientKey, attrs: Attrs) -> int | None:
        """The new row's id, or None when the patient already exists (nothing written)."""
        row = self.conn.execute(
            "INSERT INTO patients (patient_id, issuer, name, birth_date, sex, attrs,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (patient_id, issuer) DO NOTHING RETURNING id",
            (key.patient_id, key.issuer, _text(attrs, "PatientName"),
             _text(attrs, "PatientBirthDate"), _text(attrs, "PatientSex"), _dump(attrs),
             self.now, self.now)).fetchone()
        if row is None:
            return None
        self._set_names(int(row[0]), _text(attrs, "PatientName"))
        return int(row[0])

    def _set_names(self, pk: int, name: str, replace: bool = False) -> None:
        if replace:
            self.conn.execute("DELETE FROM patient_names WHERE patient_fk = ?", (pk,))
        keys = name_keys(name)
        if keys:
            self.conn.executemany(
                "INSERT OR IGNORE INTO patient_names (name_key, patient_fk) VALUES (?, ?)",
                [(k, pk) for k in keys])

    def update_patient(self, pk: int, attrs: Attrs, key: PatientKey | None = None) -> None:
        self.conn.execute(
            "UPDATE patients SET name = ?, birth_date = ?, sex = ?, attrs = ?,"
            " updated_at = ? WHERE id = ?",
            (_text(attrs, "PatientName"), _text(attrs, "PatientBirthDate"),
             _text(attrs, "PatientSex"), _dump(attrs), self.now, pk))
        self._set_names(pk, _text(attrs, "PatientName"), replace=True)
        if key is not None:
            self.conn.execute("UPDATE patients SET patient_id = ?, issuer = ? WHERE id = ?",
                              (key.patient_id, key.issuer, pk))

    def mark_merged(self, prior_pk: int, surviving_pk: int) -> None:
        self.conn.execute("UPDATE patients SET merged_into = ?, updated_at = ? WHERE id = ?",
                          (surviving_pk, self.now, prior_pk))
        self.conn.execute("UPDATE patients SET merged_into = ? WHERE merged_into = ?",
                          (surviving_pk, prior_pk))

    def move_procedures(self, from_pk: int, to_pk: int) -> int:
        cur = self.conn.execute(
            "UPDATE procedures SET patient_fk = ?, updated_at = ? WHERE patient_fk = ?",
            (to_pk, self.now, from_pk))
        return cur.rowcount

    # -- procedures -------------------------------------------------------------------------
    def procedure_by_uid(self, study_uid: str) -> ProcedureRow | None:
        row = self.conn.execute(
            "SELECT id, patient_fk, study_uid, attrs FROM procedures WHERE study_uid = ?",
            (study_uid,)).fetchone()
        return _procedure(row) if row else None

    def procedure_by_order(self, placer: str, accession: str) -> ProcedureRow | None:
        """By placer order number, narrowed by accession number when one is given."""
        if not placer and not accession:
            return None
        sql = "SELECT id, patient_fk, study_uid, attrs FROM procedures WHERE "
        args: list[Any] = []
        conditions = []
        if placer:
            conditions.append("placer_order = ?")
            args.append(placer)
        if accession:
            conditions.append("accession = ?")
            args.append(accession)
        rows = self.conn.execute(sql + " AND ".join(conditions) + " ORDER BY id", args).fetchall()
        return _procedure(rows[0]) if len(rows) == 1 else None

    def insert_procedure(self, patient_fk: int, attrs: Attrs, control: str) -> int | None:
        """The new row's id, or None when the Study Instance UID exists (nothing written)."""
        row = self.conn.execute(
            "INSERT INTO procedures (patient_fk, study_uid, accession, requested_procedure_id,"
            " placer_order, filler_order, admission_id, referring_physician,"
            " requesting_physician, priority, attrs, order_control, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (study_uid) DO NOTHING RETURNING id",
            (patient_fk, *self._procedure_columns(attrs), control, self.now,
             self.now)).fetchone()
        return int(row[0]) if row else None

    def update_procedure(self, pk: int, patient_fk: int, attrs: Attrs, control: str) -> None:
        self.conn.execute(
            "UPDATE procedures SET patient_fk = ?, study_uid = ?, accession = ?,"
            " requested_procedure_id = ?, placer_order = ?, filler_order = ?, admission_id = ?,"
            " referring_physician = ?, requesting_physician = ?, priority = ?, attrs = ?,"
            " order_control = ?, updated_at = ? WHERE id = ?",
            (patient_fk, *self._procedure_columns(attrs), control, self.now, pk))

    def touch_procedure(self, pk: int, control: str) -> None:
        self.conn.execute("UPDATE procedures SET order_control = ?, updated_at = ? WHERE id = ?",
                          (control, self.now, pk))

    @staticmethod
    def _procedure_columns(attrs: Attrs) -> tuple[Any, ...]:
        return (_text(attrs, "StudyInstanceUID"), _text(attrs, "AccessionNumber"),
                _text(attrs, "RequestedProcedureID"),
                _text(attrs, "PlacerOrderNumberImagingServiceRequest"),
                _text(attrs, "FillerOrderNumberImagingServiceRequest"),
                _text(attrs, "AdmissionID"), _text(attrs, "ReferringPhysicianName"),
                _text(attrs, "RequestingPhysician"), _text(attrs, "RequestedProcedurePriority"),
                _dump(attrs))

    # -- steps ------------------------------------------------------------------------------
    def steps(self, procedure_fk: int) -> list[StepRow]:
        rows = self.conn.execute(
            "SELECT id, sps_id, status, attrs FROM steps WHERE procedure_fk = ? ORDER BY id",
            (procedure_fk,)).fetchall()
        return [StepRow(r[0], r[1], StepStatus(r[2]), json.loads(r[3])) for r in rows]

    def insert_step(self, procedure_fk: int, attrs: Attrs, status: StepStatus) -> int:
        cur = self.conn.execute(
            "INSERT INTO steps (procedure_fk, sps_id, status, modality, start_date, start_time,"
            " start_dt, performing_physician, station_name, location, attrs, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (procedure_fk, _text(attrs, "ScheduledProcedureStepID"), status.value,
             *self._step_columns(attrs), self.now, self.now))
        pk = int(cur.lastrowid or 0)
        self._set_stations(pk, attrs)
        return pk

    def update_step(self, pk: int, attrs: Attrs, status: StepStatus) -> None:
        self.conn.execute(
            "UPDATE steps SET status = ?, modality = ?, start_date = ?, start_time = ?,"
            " start_dt = ?, performing_physician = ?, station_name = ?, location = ?,"
            " attrs = ?, updated_at = ? WHERE id = ?",
            (status.value, *self._step_columns(attrs), self.now, pk))
        self.conn.execute("DELETE FROM step_stations WHERE step_fk = ?", (pk,))
        self._set_stations(pk, attrs)

    def set_step_status(self, pk: int, status: StepStatus) -> None:
        self.conn.execute("UPDATE steps SET status = ?, updated_at = ? WHERE id = ?",
                          (status.value, self.now, pk))

    def delete_step(self, pk: int) -> None:
        self.conn.execute("DELETE FROM steps WHERE id = ?", (pk,))

    def _set_stations(self, step_pk: int, attrs: Attrs) -> None:
        stations = attrs.get("ScheduledStationAETitle") or []
        if not stations:
            return
        if isinstance(stations, str):
            stations = [stations]
        start_dt = self._step_columns(attrs)[3]
        self.conn.executemany(
            "INSERT OR IGNORE INTO step_stations (station_aet, start_dt, step_fk)"
            " VALUES (?, ?, ?)", [(str(s), start_dt, step_pk) for s in stations if s])

    @staticmethod
    def _step_columns(attrs: Attrs) -> tuple[Any, ...]:
        date = _text(attrs, "ScheduledProcedureStepStartDate")
        time_ = _text(attrs, "ScheduledProcedureStepStartTime")
        digits = time_.replace(":", "").split(".")[0]  # ACR-NEMA HH:MM:SS too
        start_dt = (date.replace(".", "") + (digits + "000000")[:6]) if date else ""
        return (_text(attrs, "Modality"), date, time_, start_dt,
                _text(attrs, "ScheduledPerformingPhysicianName"),
                _text(attrs, "ScheduledStationName"),
                _text(attrs, "ScheduledProcedureStepLocation"), _dump(attrs))


def _patient(row: Any) -> PatientRow:
    return PatientRow(row[0], PatientKey(row[1], row[2]), json.loads(row[3]), row[4])


def _procedure(row: Any) -> ProcedureRow:
    return ProcedureRow(row[0], row[1], row[2], json.loads(row[3]))


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
        cur = self.conn.execute(
            "INSERT INTO mpps (sop_instance_uid, status, calling_ae, unscheduled, dataset,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (sop_instance_uid, status, calling_ae, int(unscheduled),
             json.dumps(dataset, separators=(",", ":")), self.now, self.now))
        return int(cur.lastrowid or 0)

    def update_mpps(self, pk: int, status: str, dataset: dict[str, Any]) -> None:
        self.conn.execute(
            "UPDATE mpps SET status = ?, dataset = ?, updated_at = ? WHERE id = ?",
            (status, json.dumps(dataset, separators=(",", ":")), self.now, pk))

    def link(self, mpps_pk: int, step_pks: list[int]) -> None:
        self.conn.executemany("INSERT OR IGNORE INTO mpps_steps (mpps_fk, step_fk) VALUES (?, ?)",
                              [(mpps_pk, s) for s in step_pks])

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
        cur = self.conn.execute(
            "INSERT INTO outbox (destination, order_key, control_id, message_type, payload,"
            " next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (destination, order_key, control_id, message_type, payload,
             self.now if due_at is None else due_at, self.now, self.now))
        return int(cur.lastrowid or 0)

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
        return self.conn.execute(sql, args).rowcount

    def purge(self, state: str, older_than: float) -> int:
        return self.conn.execute("DELETE FROM outbox WHERE state = ? AND updated_at < ?",
                                 (state, older_than)).rowcount


def outbox_entries(conn: sqlite3.Connection, state: str = "", limit: int = 100
                   ) -> list[OutboxRow]:
    sql = f"SELECT {OUTBOX_COLUMNS} FROM outbox"
    args: list[Any] = []
    if state:
        sql += " WHERE state = ?"
        args.append(state)
    return [OutboxRow(*r) for r in conn.execute(sql + " ORDER BY id DESC LIMIT ?",
                                                 [*args, limit])]
