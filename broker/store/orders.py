"""Patients, requested procedures and their scheduled steps: a handful of set-based
statements per order, whatever the number of steps (each step list travels as one JSON
parameter)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

from broker.model.orders import Attrs, PatientKey, StepStatus
from broker.model.worklist import name_keys
from broker.store.dialect import Dialect
from broker.store.messages import ACCEPTED, Accepted, accepted_of
from broker.store.placing import STEP_COLUMNS, place_order_sql
from broker.store.repo import Repo, _dump, _text

#: the patient of a key, or the one it was merged into (merges followed to the end)
RESOLVE_PATIENT = """
    WITH RECURSIVE chain (id, patient_id, issuer, attrs, merged_into, depth) AS (
        SELECT id, patient_id, issuer, attrs, merged_into, 0 FROM patients
        WHERE patient_id = ? AND issuer = ?
        UNION ALL
        SELECT p.id, p.patient_id, p.issuer, p.attrs, p.merged_into, c.depth + 1
        FROM patients p JOIN chain c ON p.id = c.merged_into WHERE c.depth < 64)
    SELECT id, patient_id, issuer, attrs, merged_into FROM chain ORDER BY depth DESC LIMIT 1"""


@cache
def insert_steps_sql(d: Dialect) -> str:
    """New steps of one procedure from one JSON parameter of rows, in their order."""
    return ("INSERT INTO steps (procedure_fk, status, created_at, updated_at, sps_id, modality,"
            " start_date, start_time, start_dt, performing_physician, station_name, location,"
            " attrs) SELECT ?, ?, ?, ?, v.sps_id, " + ", ".join(f"v.{c}" for c in STEP_COLUMNS)
            + " FROM " + d.json_rows(("sps_id", *STEP_COLUMNS)) + " AS v ORDER BY v.ord"
            " RETURNING id, sps_id")


@cache
def update_steps_sql(d: Dialect) -> str:
    """Existing steps' status and attributes from one JSON parameter of rows."""
    return ("UPDATE steps SET status = v.status, modality = v.modality,"
            " start_date = v.start_date, start_time = v.start_time, start_dt = v.start_dt,"
            " performing_physician = v.performing_physician, station_name = v.station_name,"
            " location = v.location, attrs = v.attrs, updated_at = ?"
            " FROM " + d.json_rows(("id", "status", *STEP_COLUMNS), integers=("id",))
            + " AS v WHERE steps.id = v.id")


@cache
def insert_stations_sql(d: Dialect) -> str:
    return ("INSERT INTO step_stations (station_aet, start_dt, step_fk)"
            " SELECT v.station_aet, v.start_dt, v.step_fk FROM "
            + d.json_rows(("station_aet", "start_dt", "step_fk"), integers=("step_fk",))
            + " AS v WHERE true ON CONFLICT DO NOTHING")


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


@dataclass(slots=True)
class PlacedOrder:
    """Where a new order went: its patient's row id, the patient row as it was when it
    existed already (None: created with the order), and the new procedure's id (None: the
    Study Instance UID exists and nothing of the procedure was written). ``accepted``: the
    message already accepted under the guard's control ID (then nothing was written)."""

    patient_fk: int
    existing: PatientRow | None
    procedure_fk: int | None
    accepted: Accepted | None = None


#: (sender application, sender facility, control ID) of the message bringing an order
Guard = tuple[str, str, str]


@dataclass(slots=True)
class StepChange:
    """An existing step, its new attributes and the status it keeps or takes."""

    row: StepRow
    attrs: Attrs
    status: StepStatus


class OrderRepo(Repo):
    """SQL of patients, procedures and steps; every method runs in the caller's transaction."""

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
                "INSERT INTO patient_names (name_key, patient_fk) VALUES (?, ?)"
                " ON CONFLICT DO NOTHING",
                [(k, pk) for k in keys])

    def resolve_patient(self, key: PatientKey) -> PatientRow | None:
        """The patient with this key, or the one it was merged into (following merges), in
        one statement."""
        row = self.conn.execute(RESOLVE_PATIENT, (key.patient_id, key.issuer)).fetchone()
        return _patient(row) if row else None

    def update_patient(self, pk: int, attrs: Attrs, key: PatientKey | None = None,
                       previous: Attrs | None = None) -> None:
        """New attributes (and key); the name index is rewritten unless ``previous`` (the
        stored attributes) shows the same name."""
        self.conn.execute(
            "UPDATE patients SET name = ?, birth_date = ?, sex = ?, attrs = ?,"
            " updated_at = ? WHERE id = ?",
            (_text(attrs, "PatientName"), _text(attrs, "PatientBirthDate"),
             _text(attrs, "PatientSex"), _dump(attrs), self.now, pk))
        name = _text(attrs, "PatientName")
        if previous is None or _text(previous, "PatientName") != name:
            self._set_names(pk, name, replace=True)
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
        return self.dialect.changed(self.conn, cur)

    # -- a new order ------------------------------------------------------------------------
    def place_order(self, key: PatientKey, patient_attrs: Attrs, procedure_attrs: Attrs,
                    control: str, steps: list[Attrs], status: StepStatus,
                    unless_accepted: Guard | None = None) -> PlacedOrder:
        """A new order: its patient created (or found, merges followed, left unchanged), its
        requested procedure and steps inserted unless the Study Instance UID exists; with
        ``unless_accepted``, nothing at all when the message log holds an accepted message
        of that sender and control ID (where inserts chain: in the same statement)."""
        if self.dialect.chained_inserts:
            return self._place_order_at_once(key, patient_attrs, procedure_attrs, control,
                                             steps, status, unless_accepted)
        if unless_accepted is not None:
            accepted = accepted_of(self.conn.execute(ACCEPTED, unless_accepted).fetchone())
            if accepted is not None:
                return PlacedOrder(0, None, None, accepted)
        existing = None
        patient_fk = self.insert_patient(key, patient_attrs)
        if patient_fk is None:
            existing = self.resolve_patient(key)
            assert existing is not None
            patient_fk = existing.id
        procedure_fk = self.insert_procedure(patient_fk, procedure_attrs, control)
        if procedure_fk is not None:
            self.insert_steps(procedure_fk, steps, status)
        return PlacedOrder(patient_fk, existing, procedure_fk)

    def _place_order_at_once(self, key: PatientKey, patient_attrs: Attrs,
                             procedure_attrs: Attrs, control: str, steps: list[Attrs],
                             status: StepStatus, guard: Guard | None) -> PlacedOrder:
        name = _text(patient_attrs, "PatientName")
        rows, stations = [], []
        for attrs in steps:
            sps_id, columns = _text(attrs, "ScheduledProcedureStepID"), _step_columns(attrs)
            rows.append([sps_id, *columns])
            stations += [[sps_id, str(aet), columns[3]] for aet in _stations(attrs) if aet]
        row = self.conn.execute(place_order_sql(self.dialect, guard is not None), (
            *(guard or ()),
            key.patient_id, key.issuer, name, _text(patient_attrs, "PatientBirthDate"),
            _text(patient_attrs, "PatientSex"), _dump(patient_attrs), self.now, self.now,
            json.dumps(sorted(name_keys(name)), ensure_ascii=False),
            key.patient_id, key.issuer,
            *self._procedure_columns(procedure_attrs), control, self.now, self.now,
            status.value, self.now, self.now, _dump_rows(rows), _dump_rows(stations),
        )).fetchone()
        accepted = accepted_of(row[6:]) if guard is not None else None
        if accepted is not None:
            return PlacedOrder(0, None, None, accepted)
        existing = None if row[3] is None else _patient(row[:5])
        return PlacedOrder(int(row[0]), existing, None if row[5] is None else int(row[5]))

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

    def procedure_with_steps(self, study_uid: str) -> tuple[ProcedureRow, list[StepRow]] | None:
        """A requested procedure and its steps (by id), in one statement."""
        rows = self.conn.execute(
            "SELECT p.id, p.patient_fk, p.study_uid, p.attrs, s.id, s.sps_id, s.status, s.attrs"
            " FROM procedures p LEFT JOIN steps s ON s.procedure_fk = p.id"
            " WHERE p.study_uid = ? ORDER BY s.id", (study_uid,)).fetchall()
        if not rows:
            return None
        steps = [StepRow(r[4], r[5], StepStatus(r[6]), json.loads(r[7]))
                 for r in rows if r[4] is not None]
        return _procedure(rows[0][:4]), steps

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

    # -- steps (each call one statement, whatever the number of steps) --------------------
    def steps(self, procedure_fk: int) -> list[StepRow]:
        rows = self.conn.execute(
            "SELECT id, sps_id, status, attrs FROM steps WHERE procedure_fk = ? ORDER BY id",
            (procedure_fk,)).fetchall()
        return [StepRow(r[0], r[1], StepStatus(r[2]), json.loads(r[3])) for r in rows]

    def insert_steps(self, procedure_fk: int, steps: list[Attrs], status: StepStatus) -> None:
        """New steps of a procedure, in this order, with their stations."""
        if not steps:
            return
        if len(steps) == 1:  # the usual order: one row, no result to wait for
            sps_id = _text(steps[0], "ScheduledProcedureStepID")
            columns = _step_columns(steps[0])
            self.conn.execute(
                "INSERT INTO steps (procedure_fk, status, created_at, updated_at, sps_id,"
                " modality, start_date, start_time, start_dt, performing_physician,"
                " station_name, location, attrs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (procedure_fk, status.value, self.now, self.now, sps_id, *columns))
            stations = [[str(aet), columns[3]] for aet in _stations(steps[0]) if aet]
            if stations:
                self.conn.execute(
                    "INSERT INTO step_stations (station_aet, start_dt, step_fk)"
                    " SELECT v.station_aet, v.start_dt, (SELECT max(id) FROM steps"
                    " WHERE procedure_fk = ? AND sps_id = ?) FROM "
                    + self.dialect.json_rows(("station_aet", "start_dt"))
                    + " AS v WHERE true ON CONFLICT DO NOTHING",
                    (procedure_fk, sps_id, _dump_rows(stations)))
            return
        rows = [[_text(a, "ScheduledProcedureStepID"), *_step_columns(a)] for a in steps]
        created = self.conn.execute(insert_steps_sql(self.dialect), (
            procedure_fk, status.value, self.now, self.now, _dump_rows(rows))).fetchall()
        ids = {str(sps): int(pk) for pk, sps in created}
        self._add_stations([(ids[_text(a, "ScheduledProcedureStepID")], a) for a in steps])

    def update_steps(self, changes: list[StepChange]) -> None:
        """Replace the attributes and status of existing steps, and their stations."""
        if not changes:
            return
        rows = [[c.row.id, c.status.value, *_step_columns(c.attrs)] for c in changes]
        self.conn.execute(update_steps_sql(self.dialect), (self.now, _dump_rows(rows)))
        if any(_stations(c.row.attrs) for c in changes):
            self.conn.execute(
                "DELETE FROM step_stations WHERE step_fk IN "
                + self.dialect.json_values(integer=True),
                (json.dumps([c.row.id for c in changes]),))
        self._add_stations([(c.row.id, c.attrs) for c in changes])

    def set_steps_status(self, pks: list[int], status: StepStatus) -> None:
        if pks:
            self.conn.execute(
                "UPDATE steps SET status = ?, updated_at = ?"
                " WHERE id IN " + self.dialect.json_values(integer=True),
                (status.value, self.now, json.dumps(pks)))

    def delete_steps(self, pks: list[int]) -> None:
        if pks:
            self.conn.execute("DELETE FROM steps WHERE id IN "
                              + self.dialect.json_values(integer=True), (json.dumps(pks),))

    def _add_stations(self, steps: list[tuple[int, Attrs]]) -> None:
        rows = [[str(s), _step_columns(attrs)[3], pk] for pk, attrs in steps
                for s in _stations(attrs) if s]
        if rows:
            self.conn.execute(insert_stations_sql(self.dialect), (_dump_rows(rows),))


def _stations(attrs: Attrs) -> list[Any]:
    stations = attrs.get("ScheduledStationAETitle") or []
    return [stations] if isinstance(stations, str) else list(stations)


def _step_columns(attrs: Attrs) -> tuple[Any, ...]:
    date = _text(attrs, "ScheduledProcedureStepStartDate")
    time_ = _text(attrs, "ScheduledProcedureStepStartTime")
    digits = time_.replace(":", "").split(".")[0]  # ACR-NEMA HH:MM:SS too
    start_dt = (date.replace(".", "") + (digits + "000000")[:6]) if date else ""
    return (_text(attrs, "Modality"), date, time_, start_dt,
            _text(attrs, "ScheduledPerformingPhysicianName"),
            _text(attrs, "ScheduledStationName"),
            _text(attrs, "ScheduledProcedureStepLocation"), _dump(attrs))


def _dump_rows(rows: list[list[Any]]) -> str:
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":"))


def _patient(row: Any) -> PatientRow:
    return PatientRow(row[0], PatientKey(row[1], row[2]), json.loads(row[3]), row[4])


def _procedure(row: Any) -> ProcedureRow:
    return ProcedureRow(row[0], row[1], row[2], json.loads(row[3]))
